"""OpenAI checkpoints: a real TensorFlow-written fixture, the numpy bundle writer, bad input."""

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from convert import from_openai, to_hf
from gptjax import GPT, GPTConfig, init_params
from gptjax.data.cache import cache_dir
from gptjax.store import Model
from gptjax.store.tf_bundle import BundleError, TensorBundle, write_bundle
from tests.cli import run
from tests.conftest import ROOT

FIXTURE = ROOT / "tests" / "fixtures" / "openai-tiny"
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def hf_from_raw(raw: dict[str, np.ndarray], hp: dict):
    """An HF model filled straight from TensorFlow's variables (not through our converter)."""
    config = transformers.GPT2Config(
        vocab_size=hp["n_vocab"],
        n_positions=hp["n_ctx"],
        n_embd=hp["n_embd"],
        n_head=hp["n_head"],
        n_layer=hp["n_layer"],
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    model = transformers.GPT2LMHeadModel(config).eval()
    names = {"g": "weight", "b": "bias", "w": "weight"}
    state = {}
    for key, value in raw.items():
        parts = key.split(".")[1:]  # drop "model"
        if parts[0].startswith("h") and parts[0][1:].isdigit():
            parts = ["h", parts[0][1:], *parts[1:]]
        if parts[-1] in names:
            parts[-1] = names[parts[-1]]
        else:  # wte, wpe
            parts.append("weight")
        state["transformer." + ".".join(parts)] = torch.tensor(
            value.squeeze(0) if value.ndim == 3 else value
        )
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all("lm_head" in m or "attn.bias" in m for m in missing)
    return model


def logits(cfg, params, ids):
    return np.asarray(GPT(cfg).apply({"params": jax.tree.map(jnp.asarray, params)}, ids))


def test_tensorflow_fixture_matches_transformers():
    cfg, params = from_openai(FIXTURE)
    hp = json.loads((FIXTURE / "hparams.json").read_text())
    assert cfg == GPTConfig(vocab_size=64, context_length=16, emb_dim=32, n_heads=4, n_layers=2)
    model = hf_from_raw(dict(np.load(FIXTURE / "reference.npz")), hp)
    ids = np.random.default_rng(0).integers(0, 64, (2, 16))
    with torch.no_grad():
        ref = model(torch.tensor(ids)).logits.numpy()
    assert np.abs(logits(cfg, params, ids) - ref).max() < 1e-4


def test_openai_to_hf_round_trip(tmp_path):
    cfg, params = from_openai(FIXTURE)
    model = transformers.GPT2LMHeadModel.from_pretrained(to_hf(cfg, params, tmp_path / "hf"))
    ids = np.random.default_rng(1).integers(0, 64, (2, 16))
    with torch.no_grad():
        ref = model.eval()(torch.tensor(ids)).logits.numpy()
    assert np.abs(logits(cfg, params, ids) - ref).max() < 1e-4


def copy_fixture(tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(FIXTURE, folder)
    return folder


def test_numpy_writer_round_trips(tmp_path):
    reader = TensorBundle(FIXTURE / "model.ckpt")
    tensors = [(k, reader.read(k)) for k in reversed(reader.entries)]
    write_bundle(tmp_path / "model.ckpt", tensors)
    again = TensorBundle(tmp_path / "model.ckpt")
    assert sorted(again.entries) == sorted(reader.entries)
    for k, v in tensors:
        np.testing.assert_array_equal(again.read(k), v)


def corrupt(folder, what):
    data = folder / "model.ckpt.data-00000-of-00001"
    if what == "missing-data":
        data.unlink()
    elif what == "truncated":
        data.write_bytes(data.read_bytes()[:-100])
    elif what == "checksum":
        raw = bytearray(data.read_bytes())
        raw[500] ^= 0xFF
        data.write_bytes(bytes(raw))
    elif what == "hparams":
        hp = json.loads((folder / "hparams.json").read_text())
        (folder / "hparams.json").write_text(json.dumps({**hp, "n_embd": 64, "n_head": 4}))
    elif what == "index":
        (folder / "model.ckpt.index").write_bytes(b"not a table" * 10)
    elif what in ("extra", "missing-tensor"):
        reader = TensorBundle(folder / "model.ckpt")
        tensors = {k: reader.read(k) for k in reader.entries}
        if what == "extra":
            tensors["model/h2/ln_1/g"] = np.ones(32, np.float32)
        else:
            del tensors["model/h1/mlp/c_fc/b"]
        write_bundle(folder / "model.ckpt", sorted(tensors.items()))


@pytest.mark.parametrize(
    ("what", "error", "needle"),
    [
        ("missing-data", FileNotFoundError, "model.ckpt.data-00000-of-00001: missing"),
        ("truncated", BundleError, "truncated: tensor model/"),
        ("checksum", BundleError, "fails its crc32c checksum"),
        ("hparams", ValueError, r"hparams.json\): tensor for h_0/.* has shape .*, expected"),
        ("index", BundleError, "model.ckpt.index: not a TensorFlow checkpoint index"),
        ("extra", ValueError, r"unexpected model/h2/ln_1/g"),
        ("missing-tensor", ValueError, r"missing h_1/mlp/c_fc/bias"),
    ],
)
def test_bad_checkpoints_name_the_file_or_tensor(tmp_path, what, error, needle):
    folder = copy_fixture(tmp_path)
    corrupt(folder, what)
    with pytest.raises(error, match=needle):
        from_openai(folder)


def run_convert(*args):
    return run("convert.__main__", *args)


def test_cli_converts_and_leaves_nothing_on_failure(tmp_path):
    out = tmp_path / "out"
    res = run_convert("openai", str(FIXTURE), str(out))
    assert res.returncode == 0, res.stderr
    files = {"config.json", "params", "checksums.json", "encoder.json", "vocab.bpe"}
    assert {p.name for p in out.iterdir()} == files
    res = run_convert("export-hf", str(out), str(tmp_path / "hf"))
    assert res.returncode == 0 and (tmp_path / "hf" / "model.safetensors").is_file()

    bad = copy_fixture(tmp_path)
    corrupt(bad, "truncated")
    res = run_convert("openai", str(bad), str(tmp_path / "never"))
    assert res.returncode == 2 and "truncated" in res.error
    assert not (tmp_path / "never").exists() and not list(tmp_path.glob(".never*"))
    res = run_convert("openai", str(tmp_path), str(tmp_path / "never"))
    assert res.returncode == 2 and "not an OpenAI GPT-2 folder" in res.stderr


def test_export_hf_refuses_switches_gpt2_cannot_hold_and_writes_nothing(tmp_path):
    cfg = GPTConfig.preset("nano", position="rotary", norm="rmsnorm", activation="relu2")
    Model(cfg, init_params(cfg, jax.random.key(0))).save(tmp_path / "modern")
    res = run_convert("export-hf", str(tmp_path / "modern"), str(tmp_path / "hf"))
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "cannot express position='rotary', norm='rmsnorm'" in res.error
    assert "activation" not in res.error  # relu2 it can hold
    assert not (tmp_path / "hf").exists() and not list(tmp_path.glob(".hf*"))


def gpt2_vocabulary_folder(tmp_path):
    """A numpy-written OpenAI folder with the real vocabulary and random small weights."""
    folder = tmp_path / "model"
    folder.mkdir()
    cfg = GPTConfig(vocab_size=50257, context_length=64, emb_dim=16, n_heads=2, n_layers=1)
    from gptjax import init_params
    from gptjax.store.names import flatten, rows

    flat = dict(flatten(init_params(cfg, jax.random.key(0))))
    tensors = []
    for ours, _, theirs in rows(cfg):
        v = np.asarray(flat[ours])
        tensors.append((theirs, v[None] if theirs.endswith("/w") else v))
    write_bundle(folder / "model.ckpt", tensors)
    (folder / "checkpoint").write_text('model_checkpoint_path: "model.ckpt"\n')
    hp = dict(n_vocab=50257, n_ctx=64, n_embd=16, n_head=2, n_layer=1)
    (folder / "hparams.json").write_text(json.dumps(hp))
    for name in ("encoder.json", "vocab.bpe"):
        shutil.copy(cache_dir() / "gpt2-bpe" / name, folder / name)
    return folder


def test_check_on_a_gpt2_vocabulary_checkpoint(tmp_path):
    folder = gpt2_vocabulary_folder(tmp_path)
    res = run_convert("check", str(folder))
    assert res.returncode == 0, res.stderr
    loss_line = res.stdout.splitlines()[0]  # "the-verdict loss (context 64): train X, val Y"
    train, val = (float(part.split()[-1]) for part in loss_line.split(":")[1].split(","))
    assert 10.0 < train < 11.5 and 10.0 < val < 11.5  # about ln(50257) = 10.8 for random weights
    assert "greedy sample: 'Every effort moves you" in res.stdout


def model_files(size="124M"):
    files = {
        f"/gpt-2/models/{size}/{p.name}": p.read_bytes()
        for p in FIXTURE.iterdir()
        if p.name != "reference.npz"
    }
    files[f"/gpt-2/models/{size}/model.ckpt.meta"] = b"meta graph, never needed"
    for name in ("encoder.json", "vocab.bpe"):
        files[f"/gpt-2/models/{size}/{name}"] = (cache_dir() / "gpt2-bpe" / name).read_bytes()
    return files


def test_download_resumes_a_dropped_file_and_falls_back_to_a_mirror(tmp_path):
    from convert.fetch import OPENAI_FILES, download_model
    from tests.http_fixture import FileServer

    with FileServer(model_files()) as server:
        data = "/gpt-2/models/124M/model.ckpt.data-00000-of-00001"
        server.drop_after[data] = 50_000
        mirrors = (server.url("/nowhere"), server.url("/gpt-2/models"))
        folder = download_model("124M", tmp_path / "m", mirrors=mirrors, progress=False)
        ranges = [r for path, r in server.requests if path == data]
    assert sorted(p.name for p in folder.iterdir()) == sorted(OPENAI_FILES)
    assert ranges == [None, "bytes=50000-"]
    cfg, _ = from_openai(folder)
    assert cfg.vocab_size == 64


def test_download_cli_hf_source_and_bad_size(tmp_path):
    from tests.http_fixture import FileServer

    files = {
        "/openai-community/gpt2/resolve/main/config.json": b'{"n_embd": 8}',
        "/openai-community/gpt2/resolve/main/model.safetensors": b"x" * 1000,
    }
    with FileServer(files) as server:
        res = run_convert(
            "download",
            "124M",
            "--source",
            "hf",
            "--dir",
            str(tmp_path / "hf"),
            "--mirror",
            server.url(""),
        )
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "hf" / "model.safetensors").read_bytes() == b"x" * 1000
    res = run_convert("download", "200M")
    assert res.returncode == 2 and "unknown GPT-2 size '200M'" in res.stderr


def test_converted_checkpoint_feeds_pretrain_and_generate(tmp_path):
    out = tmp_path / "out"
    assert run_convert("openai", str(gpt2_vocabulary_folder(tmp_path)), str(out)).returncode == 0
    gen = run("train.generate", "--ckpt", out, "--max-new-tokens", "3")
    assert gen.returncode == 0 and gen.stdout.startswith("Every effort moves you"), gen.stderr
    train = run(
        "train.pretrain",
        "--init-from",
        str(out),
        "--out",
        str(tmp_path / "run"),
        "--max-steps",
        "1",
        "--batch-size",
        "2",
        "--context-length",
        "32",
        "--eval-batches",
        "1",
        "--sample-tokens",
        "2",
        "--no-progress",
    )
    assert train.returncode == 0, train.stderr
    small = run_convert("openai", str(FIXTURE), str(tmp_path / "small"))
    assert small.returncode == 0
    gen = run("train.generate", "--ckpt", tmp_path / "small")
    assert gen.returncode == 2 and "vocabulary (64)" in gen.stderr
