"""The retrieval world model: exact recall of stored transitions, batching, save/load, imagine.

The toy frame world (tests/toy_world.py): the hand carries a drawn cup towards a target pixel;
the model reads the hand (proprioception), the goal and the frame.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from toy_world import PROPRIO, SpaceOnlyEnv, obs_of, toy_episodes, write_toy

from embodied.agents.knn import ExactIndex, make_index
from embodied.agents.mpc import MPCAgent, build_planner, make_policy
from embodied.agents.retrieval_model import RetrievalModel
from embodied.agents.training import train_world_model
from embodied.apps.eval import load_agents
from embodied.dataset import Dataset
from embodied.protocols import WorldModel

GOAL = ["target_x", "target_y"]
TINY = dict(frame_dims=6, pool=4, proprio_labels=PROPRIO, goal_labels=GOAL, reward_labels=PROPRIO)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return Dataset.load(write_toy(tmp_path_factory.mktemp("toy"), toy_episodes()))


def stored_queries(model: RetrievalModel, ds: Dataset) -> tuple[torch.Tensor, dict]:
    """Every stored transition's latent, encoded as an observation would be."""
    st, px = ds.transitions("state"), ds.transitions("pixels")
    z = model.encode({"state": st["obs"], "pixels": px["obs"]})
    z_next = model.encode({"state": st["next_obs"], "pixels": px["next_obs"]})
    return z, {**st, "z_next": z_next}


@pytest.mark.parametrize("mode", ["delta", "next"])
def test_a_stored_query_returns_its_stored_outcome(dataset, mode):
    model = RetrievalModel(mode=mode, fail_neighbours=1, **TINY)
    model.fit(dataset, steps=1)
    assert isinstance(model, WorldModel) and model.obs_mode == "state+pixels"
    z, tr = stored_queries(model, dataset)
    z2, reward, p_fail = model.step(z, torch.as_tensor(tr["action"]))
    assert z2.shape == z.shape and reward.shape == p_fail.shape == (len(z),)
    torch.testing.assert_close(z2, tr["z_next"], atol=1e-5, rtol=0)
    ok = ~tr["dropped"]
    # the toy's reward is a function of the hand relative to the goal: recalled exactly
    np.testing.assert_allclose(reward.numpy()[ok], tr["reward"][ok], rtol=1e-5)
    assert np.array_equal(p_fail.numpy(), tr["dropped"].astype(np.float32))
    # the failure penalty is the planner's: a failed step's reward stays in the ordinary range
    assert reward.min() >= tr["reward"][ok].min()


def test_p_fail_is_the_failed_share_of_the_nearest_transitions(dataset):
    model = RetrievalModel(fail_neighbours=5, **TINY)
    model.fit(dataset, steps=1)
    z, tr = stored_queries(model, dataset)
    a = torch.as_tensor(tr["action"])
    _, _, p_fail = model.step(z, a)
    rows = model.neighbours(z, a)
    assert rows.shape == (len(z), 5) and torch.equal(rows[:, 0], torch.arange(len(z)))
    expected = torch.as_tensor(tr["dropped"], dtype=torch.float32)[rows].mean(1)
    torch.testing.assert_close(p_fail, expected)
    dropped = torch.as_tensor(tr["dropped"])
    assert p_fail[dropped].min() >= 0.2 and p_fail[dropped].mean() > p_fail[~dropped].mean()


def test_delta_mode_applies_the_remembered_change_where_the_query_is(dataset):
    model = RetrievalModel(mode="delta", **TINY)
    model.fit(dataset, steps=1)
    z, tr = stored_queries(model, dataset)
    q = z[:5].clone()
    q[:, -2:] += 0.01  # another goal: not part of the key, the same neighbours
    z2, _, _ = model.step(q, torch.as_tensor(tr["action"][:5]))
    torch.testing.assert_close(z2 - q, tr["z_next"][:5] - z[:5], atol=1e-5, rtol=0)


def test_the_neighbours_own_reward_without_reward_labels(dataset):
    model = RetrievalModel(**{**TINY, "reward_labels": []})
    model.fit(dataset, steps=1)
    z, tr = stored_queries(model, dataset)
    q = z.clone()
    q[:, -2:] = 0.0  # the query's goal is ignored: the stored reward comes back
    _, reward, _ = model.step(q, torch.as_tensor(tr["action"]))
    ok = ~tr["dropped"]
    np.testing.assert_allclose(reward.numpy()[ok], tr["reward"][ok], rtol=1e-5)


def test_batched_queries_match_one_by_one_and_chunking(dataset):
    whole, chunked = RetrievalModel(**TINY), RetrievalModel(chunk=7, **TINY)
    whole.fit(dataset, 1)
    chunked.fit(dataset, 1)
    gen = torch.Generator().manual_seed(0)
    z, _ = stored_queries(whole, dataset)
    z = z[:33] + torch.randn(33, z.shape[1], generator=gen) * 0.05
    a = torch.rand(33, 4, generator=gen) * 2 - 1
    batch = whole.step(z, a)
    single = [
        torch.cat([whole.step(z[i : i + 1], a[i : i + 1])[k] for i in range(33)]) for k in range(3)
    ]
    for x, y, c in zip(batch, single, chunked.step(z, a), strict=True):
        assert torch.equal(x, y) and torch.equal(x, c)


def test_save_load_round_trip_predicts_identically(dataset, tmp_path):
    model = RetrievalModel(**TINY)
    model.fit(dataset, 1)
    model.save(str(tmp_path / "m.pt"))
    loaded = RetrievalModel.load(str(tmp_path / "m.pt"))
    obs = obs_of(toy_episodes(1, seed=8)[0], 2)
    z = model.encode(obs)
    assert torch.equal(z, loaded.encode(obs))
    a = torch.rand(10, 4) * 2 - 1
    for x, y in zip(model.step(z.repeat(10, 1), a), loaded.step(z.repeat(10, 1), a), strict=True):
        assert torch.equal(x, y)


def test_imagine_replays_the_stored_frames_and_cup(dataset):
    ep = dataset.episodes[1]
    model = RetrievalModel(mode="next", **TINY)
    model.fit(dataset, 1)
    imag = model.imagine(obs_of(ep, 0), ep.action[:5], SpaceOnlyEnv())
    assert imag.frames_kind == "retrieved"
    assert np.array_equal(imag.frames, ep.pixels[1:6])
    assert imag.cup_pos is None  # the toy's state has no cup_z: no 3-d cup to report


def test_bad_settings_name_the_valid_ones(dataset):
    with pytest.raises(ValueError, match="delta"):
        RetrievalModel(mode="nearest")
    with pytest.raises(ValueError, match="goal_labels"):
        RetrievalModel(**{**TINY, "reward_labels": ["hand_x"]})
    with pytest.raises(ValueError, match="proprio_labels"):
        RetrievalModel(**{**TINY, "reward_labels": ["cup_x", "cup_y"]})
    with pytest.raises(ValueError, match="'exact', 'ivf'"):
        RetrievalModel(**{**TINY, "index": "hnsw"})
    with pytest.raises(ValueError, match="'exact', 'ivf'"):
        make_index(torch.zeros(4, 2), "kdtree")
    with pytest.raises(RuntimeError, match="fit"):
        RetrievalModel(**TINY).step(torch.zeros(1, 10), torch.zeros(1, 4))
    with pytest.raises(ValueError, match="valid labels"):
        RetrievalModel(**{**TINY, "proprio_labels": ["elbow"], "reward_labels": []}).fit(dataset)


def test_agent_config_trains_and_plans(tmp_path):
    cfg = OmegaConf.create(load_agents(["retrieval"], OmegaConf.create())["retrieval"])
    cfg.world_model = OmegaConf.merge(cfg.world_model, TINY)
    data = write_toy(tmp_path / "data", toy_episodes())
    out = train_world_model(cfg, data, tmp_path / "model", steps=2, progress=False)
    assert out["step"] == 2
    env = SpaceOnlyEnv()
    policy = make_policy(cfg, tmp_path / "model", env, seed=0)
    policy.reset(env)
    action = policy.act(obs_of(toy_episodes(1)[0]))
    assert action.shape == (4,) and np.all(np.abs(action) <= 1)


# -- the exact index against the search it replaced -------------------------------------------
def reference_nearest(q, keys, chunk: int, k: int, rerank: int) -> torch.Tensor:
    """The search as it was: cdist per chunk, each chunk's best re-scored exactly."""
    best = []
    for start in range(0, len(keys), chunk):
        part = keys[start : start + chunk]
        _, i = torch.cdist(q, part).topk(min(max(k, rerank), len(part)), dim=1, largest=False)
        best.append(i + start)
    cand = torch.cat(best, 1)
    exact = (q[:, None, :] - keys[cand]).pow(2).sum(-1)
    order = torch.argsort(exact, dim=1, stable=True)[:, : min(k, cand.shape[1])]
    return cand.gather(1, order)


@pytest.mark.parametrize("dim, k", [(46, 5), (3, 1)])
def test_the_exact_index_finds_what_the_reference_search_finds(dim, k):
    """Trajectory-like keys (random walks), queries near and far: the same rows in the same
    order as the old search, across chunk sizes; the exhaustive fallback agrees too."""
    gen = torch.Generator().manual_seed(0)
    keys = torch.randn(3000, dim, generator=gen).mul(0.3).view(30, 100, dim).cumsum(1).flatten(0, 1)
    pick = torch.randint(0, len(keys), (64,), generator=gen)
    q = torch.cat(
        [keys[pick[:32]] + 0.01 * torch.randn(32, dim, generator=gen), 3 * keys[pick[32:]]]
    )
    expected = reference_nearest(q, keys, 8192, k, 4)
    for chunk in (8192, 700):
        index = ExactIndex(keys, chunk=chunk, margin=4)
        assert torch.equal(index.search(q, k), expected)
        assert torch.equal(index._exhaustive(q, k), expected)


def test_the_exact_index_breaks_ties_to_the_lower_row():
    keys = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [-1.0, 0.0]])
    rows = ExactIndex(keys, margin=0).search(torch.zeros(1, 2), 3)
    assert rows.tolist() == [[0, 1, 2]]  # four keys at distance 1: the first three rows


def test_planned_actions_equal_the_reference_search(dataset, monkeypatch):
    """A planner's actions over a short episode: bit-identical with the old search."""
    cfg = OmegaConf.create(load_agents(["retrieval"], OmegaConf.create())["retrieval"])
    cfg.world_model = OmegaConf.merge(cfg.world_model, TINY)
    episode = toy_episodes(1, seed=5)[0]

    def plan(model_search) -> np.ndarray:
        with monkeypatch.context() as patch:
            if model_search is not None:
                patch.setattr(ExactIndex, "search", model_search)
            model = RetrievalModel(**{**TINY, "fail_neighbours": 3})
            model.fit(dataset, 1)
            env = SpaceOnlyEnv()

            policy = MPCAgent(model, build_planner(cfg.planner, env, 0, model))
            policy.reset(env)
            return np.stack([policy.act(obs_of(episode, t)) for t in range(8)])

    def old_search(index, q, k):
        return reference_nearest(q, index.keys, 8192, k, 4)

    assert np.array_equal(plan(None), plan(old_search))


def test_refitting_on_another_dataset_indexes_it(dataset, tmp_path):
    model = RetrievalModel(**TINY)
    model.fit(dataset, 1)
    other = Dataset.load(write_toy(tmp_path / "other", toy_episodes(3, seed=11)))
    assert model.fit(other, 1)["transitions"] == [float(len(other.transitions("state")["obs"]))]


# -- the approximate index (faiss IVF, an optional extra) -------------------------------------
def walk_keys(n: int = 4000, dim: int = 46) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    walks = torch.randn(n, dim, generator=gen).mul(0.3).view(40, n // 40, dim).cumsum(1)
    return walks.flatten(0, 1)


def test_ivf_without_faiss_names_the_extra(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "faiss", None)  # import faiss fails
    with pytest.raises(ImportError, match=r"embodied-ood\[faiss\]"):
        make_index(walk_keys(400), "ivf")


def test_the_ivf_index_recalls_the_exact_neighbours():
    """Off-data queries as a planner sends them: every probe's answer is stored rows, nearest
    first by the exact distances; all lists probed gives the exact sets; recall@5 >= 0.9 at the
    default nprobe; two builds answer identically."""
    pytest.importorskip("faiss")
    keys = walk_keys()
    gen = torch.Generator().manual_seed(2)
    q = keys[torch.randint(0, len(keys), (64,), generator=gen)] + 0.5 * torch.randn(
        64, keys.shape[1], generator=gen
    )
    exact = ExactIndex(keys).search(q, 5)
    full = make_index(keys, "ivf", nlist=16, nprobe=16).search(q, 5)
    assert {tuple(sorted(r)) for r in full.tolist()} == {tuple(sorted(r)) for r in exact.tolist()}
    ivf = make_index(keys, "ivf", nlist=64, nprobe=8)
    rows = ivf.search(q, 5)
    assert rows.shape == (64, 5) and rows.dtype == torch.long and (rows >= 0).all()
    dist = (q[:, None] - keys[rows]).pow(2).sum(-1)
    assert (dist[:, 1:] >= dist[:, :-1] - 1e-4).all()
    recall = np.mean(
        [len(set(a) & set(b)) / 5 for a, b in zip(rows.tolist(), exact.tolist(), strict=True)]
    )
    assert recall >= 0.9
    assert torch.equal(make_index(keys, "ivf", nlist=64, nprobe=8).search(q, 5), rows)


def test_a_retrieval_model_with_the_ivf_index_recalls_stored_outcomes(dataset):
    """index=ivf end to end: stored queries find themselves (distance 0 lies in the probed
    list that holds them) and the model plans as the exact one does on them."""
    pytest.importorskip("faiss")
    exact = RetrievalModel(fail_neighbours=1, **TINY)
    approx = RetrievalModel(fail_neighbours=1, index="ivf", nlist=8, nprobe=2, **TINY)
    for model in (exact, approx):
        model.fit(dataset, steps=1)
    z, tr = stored_queries(exact, dataset)
    action = torch.as_tensor(tr["action"])
    got, want = approx.step(z, action), exact.step(z, action)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    # the index is a search setting: a fitted model switches without refitting
    exact.set_index("ivf", nlist=8, nprobe=2)
    assert type(exact._key_index) is type(approx._key_index)
    for a, b in zip(exact.step(z, action), got, strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="'exact', 'ivf'"):
        exact.set_index("annoy")
