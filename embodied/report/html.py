"""report.html: one self-contained page (inline CSS, plots as inline SVG, videos linked).

Ids the browser test (embodied.report.browser) measures: ``table#headline`` and the plots'
legend/title/label ids (see embodied.report.plots).
"""

from __future__ import annotations

import base64
import re
from html import escape

from embodied.report import markdown, rollouts, tables
from embodied.report.plots import Plot
from embodied.report.summary import Summary

MAX_VIDEO_PLAYERS = 24  # embedded players; further videos are listed as links

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 24px;
       color: #1f2328; max-width: 1400px; line-height: 1.45; }
h1 { font-size: 26px; margin-bottom: 4px; }
h2 { font-size: 20px; border-bottom: 1px solid #d0d7de; padding-bottom: 4px; margin-top: 28px; }
h3 { font-size: 16px; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0; }
th, td { border: 1px solid #d0d7de; padding: 4px 7px; text-align: left; vertical-align: top; }
th { background: #dde7f5; }
tr:nth-child(even) td { background: #f6f8fa; }
.note { color: #57606a; font-size: 13px; max-width: 1100px; }
.warning { background: #fff3cd; border: 1px solid #e0b400; padding: 8px 12px; margin: 8px 0;
           border-radius: 4px; }
.meta { color: #57606a; }
figure { margin: 12px 0 20px 0; }
figure img, figure svg { max-width: 100%; height: auto; border: 1px solid #d0d7de; }
figcaption { color: #57606a; font-size: 13px; }
pre { background: #f6f8fa; padding: 10px; overflow-x: auto; font-size: 12px; }
video, .gif { max-width: 380px; margin: 4px; border: 1px solid #d0d7de; }
.videos div { display: inline-block; vertical-align: top; font-size: 12px; }
.rollouts td { vertical-align: top; }
.rollouts video, .rollouts .gif { display: block; max-width: 200px; margin: 4px 0; }
.rollouts video.imagination, .rollouts .gif.imagination { max-width: 520px; }
"""


def _prose(text: str) -> str:
    """Escaped text with the notes' markdown `code` spans as <code>."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", escape(text))


def table_html(t: tables.Table, table_id: str | None = None) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in t.header)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in t.rows
    )
    attr = f' id="{table_id}"' if table_id else ""
    return f"<table{attr}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _figure(p: Plot) -> str:
    out = f"<h3>{escape(p.title)}</h3>"
    if p.svg is not None:
        out += f'<figure id="figure-{p.name}">{p.svg}'
        out += f"<figcaption>{escape(p.caption)}</figcaption></figure>"
    elif p.png is not None:
        data = base64.b64encode(p.png).decode("ascii")
        out += f'<figure><img alt="{escape(p.title)}" src="data:image/png;base64,{data}">'
        out += f"<figcaption>{escape(p.caption)}</figcaption></figure>"
    else:
        out += f'<p class="note">{escape(p.caption)}</p>'
    return out


def _videos(paths: list[str]) -> str:
    if not paths:
        return '<p class="note">No videos in the run directory.</p>'
    items = []
    for rel in paths[:MAX_VIDEO_PLAYERS]:
        src = escape(rel, quote=True)
        player = (
            f'<img class="gif" src="{src}" alt="{src}">'
            if rel.lower().endswith(".gif")
            else f'<video controls preload="metadata" src="{src}"></video>'
        )
        items.append(f'<div>{player}<br><a href="{src}">{escape(rel)}</a></div>')
    rest = "".join(
        f'<li><a href="{escape(r, quote=True)}">{escape(r)}</a></li>'
        for r in paths[MAX_VIDEO_PLAYERS:]
    )
    return f'<div class="videos">{"".join(items)}</div>' + (f"<ul>{rest}</ul>" if rest else "")


def _player(path: str, kind: str) -> str:
    src = escape(path, quote=True)
    if path.lower().endswith(".gif"):
        return f'<img class="gif {kind}" src="{src}" alt="{src}">'
    return f'<video class="{kind}" autoplay muted loop playsinline controls src="{src}"></video>'


def _rollouts(s: Summary) -> str:
    """Per agent a row: ID episode and imagination, then OOD's, playing inline."""
    picked = rollouts.pick(s)
    if not picked:
        return '<p class="note">No rollout videos in the run directory.</p>'
    rows = []
    for agent, rs in picked.items():
        cells = []
        for r in rs:
            players = "".join(_player(r.paths[k], k) for k in rollouts.KINDS if k in r.paths)
            cells.append(f"<td>{players}<br>{escape(rollouts.caption(r))}</td>")
        rows.append(f"<tr><th>{escape(agent)}</th>{''.join(cells)}</tr>")
    note = f'<p class="note">{_prose(markdown.ROLLOUTS_NOTE)}</p>'
    return f'{note}<table class="rollouts"><tbody>{"".join(rows)}</tbody></table>'


def render(s: Summary, plots: list[Plot]) -> str:
    """The HTML page; the only external references are the videos' relative paths."""
    h = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(markdown.TITLE)}</title><style>{CSS}</style></head><body>",
        f"<h1>{escape(markdown.TITLE)}</h1>",
        f'<p class="meta">Run <code>{escape(str(s.run.run_dir))}</code> · {len(s.run.cells)} '
        f"cells · agents: {escape(', '.join(s.agents))} · tasks: {escape(', '.join(s.tasks))}</p>",
    ]
    h += [f'<div class="warning"><b>Warning:</b> {_prose(w)}</div>' for w in markdown.warnings(s)]
    first, rest = plots[0], plots[1:]
    h += [_figure(first)]
    h += [f"<h2>{escape(markdown.HEADLINE_TITLE)}</h2>"]
    h += [table_html(tables.headline_table(s), "headline")]
    h += [f'<p class="note">{_prose(tables.HEADLINE_NOTE)}</p>']
    h += [f"<details><summary>{escape(markdown.DETAILS_TITLE)}: every headline number</summary>"]
    h += [table_html(tables.details_table(s), "details")]
    h += [f'<p class="note">{_prose(tables.DETAILS_NOTE)}</p></details>']
    if s.training_seeds:
        h += [f"<h2>{escape(markdown.SEEDS_TITLE)}</h2>"]
        h += [table_html(tables.seeds_table(s), "seeds")]
        h += [f'<p class="note">{_prose(tables.SEEDS_NOTE)}</p>']
    if s.survivor_agents:
        h += [f"<h2>{escape(markdown.SURVIVORS_TITLE)}</h2>"]
        h += [table_html(tables.survivors_table(s), "survivors")]
        h += [f'<p class="note">{_prose(tables.SURVIVORS_NOTE)}</p>']
    if s.estimates:
        h += [f"<h3>{escape(markdown.ESTIMATES_TITLE)}</h3>"]
        h += [table_html(tables.estimates_table(s), "estimates")]
        h += [f'<p class="note">{_prose(tables.ESTIMATES_NOTE)}</p>']
    h += [f"<h2>{escape(markdown.CORRELATION_TITLE)}</h2>"]
    h += [f"<p>{_prose(markdown.excluded_note(s))}</p>"]
    h += [f"<h3>{escape(markdown.ACROSS_TITLE)}</h3>", table_html(tables.across_table(s))]
    h += [f"<h3>{escape(markdown.WITHIN_TITLE)}</h3>", table_html(tables.within_table(s))]
    h += [f'<p class="note">{_prose(tables.CORRELATION_NOTE)}</p>']
    h += [f"<h2>{escape(markdown.ROLLOUTS_TITLE)}</h2>", _rollouts(s)]
    h += ["<h2>Plots</h2>"]
    h += [_figure(p) for p in rest]
    h += [f"<h2>{escape(markdown.LOOK_WORK_TITLE)}</h2>", table_html(tables.look_work_table(s))]
    h += [f'<p class="note">{_prose(tables.LOOK_WORK_NOTE)}</p>']
    h += [f"<h2>{escape(markdown.SPLIT_TITLE)}</h2>"]
    h += ["<details><summary>Every split of every agent</summary>"]
    h += [table_html(tables.split_table(s)), "</details>"]
    h += [f"<h2>{escape(markdown.FLAGGED_TITLE)}</h2>"]
    if s.flagged:
        h += [
            f'<p class="note">Fewer than {s.min_episodes} episodes: shown here as raw counts, '
            "used nowhere else.</p>",
            table_html(tables.flagged_table(s)),
        ]
    else:
        h += [f'<p class="note">None: every cell has at least {s.min_episodes} episodes.</p>']
    h += [f"<h2>{escape(markdown.VIDEOS_TITLE)}</h2>", _videos(s.run.videos)]
    h += [f"<h2>{escape(markdown.TRACE_TITLE)}</h2>", "<ul>"]
    h += [f"<li><b>{escape(k)}</b>: {escape(v)}</li>" for k, v in tables.trace_items(s)]
    h += ["</ul>", "<h3>Cell counts</h3>", table_html(tables.counts_table(s))]
    if s.run.version_text is not None:
        h += ["<h3>Version info</h3>", f"<pre>{escape(s.run.version_text)}</pre>"]
    if s.run.config_text is not None:
        h += ["<h3>config.yaml</h3>", f"<pre>{escape(s.run.config_text)}</pre>"]
    h += ["</body></html>"]
    return "\n".join(h)
