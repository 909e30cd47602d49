"""Generator rules that keep the generated files runnable by the OpenPose Caffe fork and by new users:
probabilities, occlusions without a background LMDB, encoded LMDBs, random_seed, VGG weights,
--drop-source / --dataset-dir, and one-line errors (README, generator bullet)."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from openpose_train.caffe_layers import caffe_io, caffe_pb2
from openpose_train.caffe_layers import datum
from openpose_train.generator import experimental, families, fork_check, registry, render
from openpose_train.generator.cli import prototxt

# OPData fields holding one ';'-separated entry per source (docs/formats.md)
PER_SOURCE_FIELDS = ("max_degree_rotations", "scale_mins", "scale_maxs", "number_max_occlusions", "sigmas",
                     "models", "sources", "probabilities")
EXAMPLE_YAML = Path(__file__).resolve().parents[1] / "generator" / "example_skeleton.yaml"


def write_lmdb(path, encoded=False, num_keypoints=17, size=160):
    """A one-record COCO LMDB (person in the middle) written by the project's datum builder."""
    import lmdb
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    joints = np.zeros((num_keypoints, 3), np.float32)
    joints[:, 0] = np.linspace(50, 110, num_keypoints)
    joints[:, 1] = np.linspace(40, 120, num_keypoints)
    joints[:, 2] = 1
    meta = datum.Metadata(dataset="COCO", img_height=size, img_width=size, objpos=(80, 80), scale_provided=0.4,
                          joints=joints)
    image = np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8)
    value = datum.build_datum(image, meta, np.full((size, size), 255, np.uint8), encoded=encoded)
    env = lmdb.open(str(path), map_size=1 << 24)
    with env.begin(write=True) as txn:
        txn.put(b"0000000", value)
    env.close()
    return str(path)


def invoke(args, cwd=None):
    old = os.getcwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        return CliRunner().invoke(prototxt, [str(a) for a in args])
    finally:
        os.chdir(old)


def op_param(path):
    return caffe_io.read_net_prototxt(path).layer[0].op_transform_param


def script_env(**extra):
    """train_pose.sh's environment: this interpreter's openpose-train first on PATH."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return dict(os.environ, PATH=path, **extra)


def fake_caffe(tmp_path):
    fake = tmp_path / "fake_caffe"
    fake.write_text("#!/usr/bin/env bash\necho \"ARGS: $*\"\n")
    fake.chmod(0o755)
    return str(fake)


# ------------------------------------------------------------------------------- 1: probabilities
def test_readme_command_generates_with_the_presets_background_share(tmp_path):
    """The README's COCO workflow command, as written: one --lmdb takes 1 - 0.02."""
    r = invoke(["--model", "BODY_25B", "--out", "training_results/body_25b", "--lmdb", "out/lmdb_coco",
                "--background-lmdb", "out/lmdb_background", "--batch-size", "10", "--gpus", "0,1"], cwd=tmp_path)
    assert r.exit_code == 0, r.output
    p = op_param(tmp_path / "training_results/body_25b/pose_training.prototxt")
    assert (p.sources, p.models) == (str(tmp_path / "out/lmdb_coco"), "COCO_25B_17")
    assert p.probabilities == "0.98" and p.prob_only_background == pytest.approx(0.02)
    assert p.source_background == str(tmp_path / "out/lmdb_background")


def test_lmdbs_without_probability_share_the_rest_equally(tmp_path):
    r = invoke(["--model", "BODY_25B", "--out", tmp_path / "o", "--lmdb", "/d/lmdb_coco2017_foot:0.05",
                "--lmdb", "/d/lmdb_coco", "--lmdb", "/d/lmdb_mpii", "--background-lmdb", "/d/lmdb_background",
                "--prob-only-background", "0.1"])
    assert r.exit_code == 0, r.output
    p = op_param(tmp_path / "o/pose_training.prototxt")
    assert [float(v) for v in p.probabilities.split(";")] == pytest.approx([0.05, 0.425, 0.425])
    assert p.prob_only_background == pytest.approx(0.1)
    # the preset's mix given explicitly: 0.05 + 0.88 + 0.05 + 0.02
    r = invoke(["--model", "BODY_25B", "--out", tmp_path / "e", "--lmdb", "/d/lmdb_coco2017_foot:0.05",
                "--lmdb", "/d/lmdb_coco:0.88", "--lmdb", "/d/lmdb_mpii:0.05", "--background-lmdb", "/d/bg"])
    assert r.exit_code == 0, r.output
    assert op_param(tmp_path / "e/pose_training.prototxt").probabilities == "0.05;0.88;0.05"


@pytest.mark.parametrize("args,message", [
    (["--lmdb", "/d/lmdb_coco:0.5", "--lmdb", "/d/lmdb_mpii:0.5", "--background-lmdb", "/d/bg"],
     "--lmdb probabilities 0.5;0.5 sum to 1, but with prob_only_background 0.02 they must sum to 0.98"),
    (["--lmdb", "/d/lmdb_coco:0.99", "--lmdb", "/d/lmdb_mpii", "--background-lmdb", "/d/bg"],
     "leave nothing for the 1 --lmdb without one"),
    (["--lmdb", "/d/lmdb_coco", "--prob-only-background", "0.1"], "--prob-only-background needs --background-lmdb"),
])
def test_probabilities_that_do_not_sum_say_what_to_change(tmp_path, args, message):
    r = invoke(["--model", "BODY_25B", "--out", tmp_path / "o"] + args)
    assert r.exit_code == 1 and message in r.output, r.output
    assert "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------- 2: no background, no occlusions
def test_no_background_lmdb_writes_no_occlusions_and_says_so(tmp_path):
    r = invoke(["--model", "BODY_25", "--out", tmp_path / "o", "--lmdb", "/d/lmdb_coco", "--occlusions", "3"])
    assert r.exit_code == 0, r.output
    assert render.NO_BACKGROUND_NOTE in r.stderr
    p = op_param(tmp_path / "o/pose_training.prototxt")
    assert p.number_max_occlusions == "0" and not p.source_background and p.prob_only_background == 0
    # the preset's sources with the background switched off: occlusions 0, probabilities scaled to 1
    r = invoke(["--model", "BODY_25B", "--out", tmp_path / "n", "--background-lmdb", ""])
    assert r.exit_code == 0, r.output
    assert render.NO_BACKGROUND_NOTE in r.stderr
    p = op_param(tmp_path / "n/pose_training.prototxt")
    assert p.number_max_occlusions == "0;0;0" and p.prob_only_background == 0
    assert [float(v) for v in p.probabilities.split(";")] == pytest.approx([0.05 / 0.98, 0.88 / 0.98, 0.05 / 0.98])
    # with a background LMDB the occlusions stay and nothing is said
    r = invoke(["--model", "BODY_25", "--out", tmp_path / "b", "--lmdb", "/d/lmdb_coco", "--occlusions", "3",
                "--background-lmdb", "/d/bg"])
    assert r.exit_code == 0 and render.NO_BACKGROUND_NOTE not in r.output
    assert op_param(tmp_path / "b/pose_training.prototxt").number_max_occlusions == "3"


# ------------------------------------------------------------------------------- 3: encoded LMDBs
def test_encoded_lmdb_warned_at_generation_and_refused_by_train_pose_sh(tmp_path):
    raw, encoded = write_lmdb(tmp_path / "lmdb_coco"), write_lmdb(tmp_path / "lmdb_coco_jpeg", encoded=True)
    assert (fork_check.lmdb_is_encoded(raw), fork_check.lmdb_is_encoded(encoded)) == (False, True)
    assert fork_check.lmdb_is_encoded(tmp_path / "not_built") is None
    runs = {}
    for name, lmdb in (("raw", raw), ("encoded", encoded)):
        r = invoke(["--model", "BODY_25", "--preset", "tiny", "--out", tmp_path / name, "--lmdb", lmdb,
                    "--lmdb-model", "COCO_25_17", "--no-vgg"])
        assert r.exit_code == 0, r.output
        runs[name] = r
    assert f"warning: {encoded} {fork_check.ENCODED_WARNING}" in runs["encoded"].stderr
    assert "warning" not in runs["raw"].output
    env = script_env(CAFFE=fake_caffe(tmp_path))
    ok = subprocess.run(["bash", str(tmp_path / "raw/train_pose.sh"), ""], env=env, capture_output=True, text=True)
    assert ok.returncode == 0 and "ARGS: train -solver pose_solver.prototxt" in ok.stdout, ok.stderr
    bad = subprocess.run(["bash", str(tmp_path / "encoded/train_pose.sh"), ""], env=env, capture_output=True,
                         text=True)
    assert bad.returncode == 1 and "ARGS" not in bad.stdout       # the fork never started
    assert f"{encoded} is an encoded (JPEG) LMDB: the OpenPose Caffe fork cannot read it" in bad.stderr
    (tmp_path / "encoded/model").mkdir(exist_ok=True)
    (tmp_path / "encoded/model/pose_iter_2.solverstate").write_bytes(b"")
    bad = subprocess.run(["bash", str(tmp_path / "encoded/resume_train.sh"), ""], env=env, capture_output=True,
                         text=True)
    assert bad.returncode == 1 and "ARGS" not in bad.stdout and "Caffe fork cannot read it" in bad.stderr


def test_fork_check_command_lists_each_problem(tmp_path):
    from openpose_train.cli import main
    net = tmp_path / "net.prototxt"
    net.write_text(render.render_training("BODY_25", "tiny", datasets=(
        render.DatasetSpec(write_lmdb(tmp_path / "enc", encoded=True), 0.5, "COCO_25_17"),
        render.DatasetSpec(str(tmp_path / "missing"), 0.5, "COCO_25_17")), background_lmdb=""))
    r = CliRunner().invoke(main, ["fork-check", str(net)])
    assert r.exit_code == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 2 and "encoded (JPEG) LMDB" in lines[0] and f"{tmp_path / 'missing'} does not exist" in lines[1]
    text = net.read_text().replace('number_max_occlusions: "0;0"', 'number_max_occlusions: "2;0"')
    net.write_text(text)
    r = CliRunner().invoke(main, ["fork-check", str(net)])
    assert "without a source_background" in r.stderr


def test_lmdb_encoded_help_warns_about_the_fork():
    from openpose_train.cli import main
    r = CliRunner().invoke(main, ["lmdb", "--help"], terminal_width=1000)
    assert "the OpenPose Caffe fork cannot" in r.output


# ------------------------------------------------------------------------------- 4: random_seed
@pytest.mark.slow
def test_random_seed_default_option_and_reproducible_reruns(tmp_path):
    from openpose_train.training.cli import train
    lmdb = write_lmdb(tmp_path / "lmdb_coco")
    for name, seed in (("a", None), ("b", None), ("c", 7), ("d", -1)):
        args = ["--model", "BODY_25", "--preset", "tiny", "--out", tmp_path / name, "--lmdb", lmdb,
                "--lmdb-model", "COCO_25_17", "--crop-size", "64", "--batch-size", "1", "--max-iter", "2",
                "--snapshot-interval", "2", "--no-vgg", "--gpus", ""]
        r = invoke(args + (["--random-seed", seed] if seed is not None else []))
        assert r.exit_code == 0, r.output
    seeds = [caffe_io.read_solver_prototxt(tmp_path / n / "pose_solver.prototxt") for n in "acd"]
    assert seeds[0].random_seed == render.DEFAULT_RANDOM_SEED == 1 and seeds[1].random_seed == 7
    assert not seeds[2].HasField("random_seed")
    weights = {}
    for name in "abc":
        old = os.getcwd()
        os.chdir(tmp_path / name)
        try:
            r = CliRunner().invoke(train, ["-solver", "pose_solver.prototxt", "--no-progress", "--workers", "0"])
        finally:
            os.chdir(old)
        assert r.exit_code == 0, r.output
        weights[name] = caffe_io.read_caffemodel(tmp_path / name / "model" / "pose_iter_2.caffemodel")
    same = [np.array_equal(x, y) for layer in weights["a"] for x, y in zip(weights["a"][layer], weights["b"][layer])]
    other = [np.array_equal(x, y) for layer in weights["a"] for x, y in zip(weights["a"][layer], weights["c"][layer])]
    assert all(same) and not all(other)


# ------------------------------------------------------------------------------- 5, 9: one-line errors
@pytest.mark.parametrize("args,message", [
    (["--model", "BODY_25B", "--lmdb", "{tmp}/nowhere/lmdb_x"], "--lmdb {tmp}/nowhere/lmdb_x does not exist"),
    (["--model", "BODY_25", "--preset", "tiny", "--out", "{tmp}/a_file/sub"],
     "cannot create the output folder {tmp}/a_file/sub"),
    (["--model", "HAND_21", "--deploy-only", "--out", "{tmp}/a_file/sub"], "cannot create the output folder"),
])
def test_bad_paths_are_one_line_errors(tmp_path, args, message):
    (tmp_path / "a_file").write_text("")
    r = invoke([a.format(tmp=tmp_path) for a in args])
    assert r.exit_code == 1, r.output
    assert r.output.startswith("Error: ") and message.format(tmp=tmp_path) in r.output
    assert len(r.output.strip().splitlines()) == 1 and "Traceback" not in r.output


# ------------------------------------------------------------------------------- 6: VGG weights
def test_missing_vgg_weights_named_with_the_command_and_no_vgg(tmp_path):
    r = invoke(["--model", "BODY_25", "--preset", "tiny", "--out", tmp_path / "o", "--vgg-weights",
                tmp_path / "vgg.caffemodel"])
    assert r.exit_code == 0
    assert f"make them with `openpose-train vgg vgg19-dcbb9e9d.pth {tmp_path / 'vgg.caffemodel'}`" in r.stderr
    env = script_env(CAFFE=fake_caffe(tmp_path))
    run = subprocess.run(["bash", str(tmp_path / "o/train_pose.sh"), "0"], env=env, capture_output=True, text=True)
    assert run.returncode == 1 and "ARGS" not in run.stdout
    assert f"openpose-train vgg vgg19-dcbb9e9d.pth {tmp_path / 'vgg.caffemodel'}" in run.stderr
    # present: passed as -weights (and the generator says nothing)
    (tmp_path / "vgg.caffemodel").write_bytes(b"")
    r = invoke(["--model", "BODY_25", "--preset", "tiny", "--out", tmp_path / "w", "--vgg-weights",
                tmp_path / "vgg.caffemodel", "--lmdb", write_lmdb(tmp_path / "lmdb_coco"), "--lmdb-model", "COCO_25"])
    assert r.exit_code == 0 and "vgg" not in r.stderr
    run = subprocess.run(["bash", str(tmp_path / "w/train_pose.sh"), "0,1"], env=env, capture_output=True,
                         text=True, check=True)
    assert f"ARGS: train -solver pose_solver.prototxt -gpu 0,1 -weights {tmp_path / 'vgg.caffemodel'}" in run.stdout
    # --no-vgg: no -weights at all
    r = invoke(["--model", "BODY_25", "--preset", "tiny", "--out", tmp_path / "n", "--no-vgg", "--lmdb",
                tmp_path / "lmdb_coco", "--lmdb-model", "COCO_25"])
    assert r.exit_code == 0 and "vgg" not in r.stderr
    run = subprocess.run(["bash", str(tmp_path / "n/train_pose.sh"), ""], env=env, capture_output=True, text=True,
                         check=True)
    assert "ARGS: train -solver pose_solver.prototxt\n" in run.stdout
    assert "ARGS: train" in (tmp_path / "n/training_log.txt").read_text()


def test_resume_script_picks_the_newest_solverstate(tmp_path):
    out = tmp_path / "run"
    lmdb = write_lmdb(tmp_path / "lmdb_coco")
    render.render_model_files("BODY_25", out, "tiny", gpus="0", datasets=(render.DatasetSpec(lmdb, 1.0, "COCO_25"),))
    env = script_env(CAFFE=fake_caffe(tmp_path))
    r = subprocess.run(["bash", str(out / "resume_train.sh")], env=env, capture_output=True, text=True)
    assert r.returncode == 1 and "no model/pose_iter_*.solverstate" in r.stderr
    (out / "model").mkdir()
    for it in (2000, 10000, 8000):
        (out / "model" / f"pose_iter_{it}.solverstate").write_bytes(b"")
    r = subprocess.run(["bash", str(out / "resume_train.sh"), ""], env=env, capture_output=True, text=True, check=True)
    assert "ARGS: train -solver pose_solver.prototxt -snapshot model/pose_iter_10000.solverstate" in r.stdout
    assert "-gpu" not in r.stdout


# ------------------------------------------------------------------------------- 7: --drop-source, --dataset-dir
def test_drop_source_renormalises_the_rest(tmp_path):
    dropped = ["lmdb_face_frgc", "lmdb_face_multipie", "lmdb_dome135"]
    r = invoke(["--model", "BODY_135", "--out", tmp_path / "o", "--dataset-dir", tmp_path / "data"]
               + [a for name in dropped for a in ("--drop-source", name)])
    assert r.exit_code == 0, r.output
    p = op_param(tmp_path / "o/pose_training.prototxt")
    recipe = families.get_preset("100_135AlmostSameBatchAllGPUs").recipe
    kept = [d for d in recipe.datasets if d.lmdb not in dropped]
    assert p.sources.split(";") == [str(tmp_path / "data" / d.lmdb) for d in kept]
    total = sum(d.probability for d in kept)
    expected = [d.probability * 0.98 / total for d in kept]
    assert [float(v) for v in p.probabilities.split(";")] == pytest.approx(expected, abs=1e-11)
    assert p.prob_only_background == pytest.approx(0.02)
    for name in PER_SOURCE_FIELDS:
        assert len(getattr(p, name).split(";")) == len(kept), name
    r = invoke(["--model", "BODY_135", "--out", tmp_path / "x", "--drop-source", "lmdb_nope"])
    assert r.exit_code == 1 and "--drop-source lmdb_nope: preset 100_135AlmostSameBatchAllGPUs has no such" in r.output
    r = invoke(["--model", "BODY_135", "--out", tmp_path / "x", "--drop-source", "lmdb_coco", "--lmdb", "/d/lmdb_coco"])
    assert r.exit_code == 1 and "with --lmdb list only the sources you want" in r.output


@pytest.mark.parametrize("preset", ["1_25BBkg", "1_25BSuperModel11FullVGG"])
def test_dataset_dir_holds_the_presets_folders(tmp_path, preset):
    data = tmp_path / "data"
    names = ["lmdb_coco2017_foot", "lmdb_coco", "lmdb_mpii", "lmdb_background"]
    for name in names:
        write_lmdb(data / name)
    r = invoke(["--model", "BODY_25B", "--preset", preset, "--out", tmp_path / "o", "--dataset-dir", data, "--no-vgg"])
    assert r.exit_code == 0, r.output
    assert r.stderr == ""                      # every LMDB found, raw, with a background
    p = op_param(tmp_path / "o/pose_training.prototxt")
    assert p.sources.split(";") + [p.source_background] == [str(data / n) for n in names]
    assert [float(v) for v in p.probabilities.split(";")] == pytest.approx([0.05, 0.88, 0.05])
    assert p.prob_only_background == pytest.approx(0.02)
    r = CliRunner().invoke(prototxt, ["--help"], terminal_width=1000)
    assert f"{preset}: {', '.join(names)}" in r.output
    r = invoke(["--model", "BODY_25B", "--preset", preset, "--out", tmp_path / "m", "--dataset-dir", tmp_path / "e"])
    assert "note: not built yet" in r.stderr and str(tmp_path / "e" / "lmdb_mpii") in r.stderr


# ------------------------------------------------------------------------------- 8: every preset and model
def _cases():
    """(model, preset, options) for every preset, every model with a training variant and the YAML."""
    preset_models = {p: m for m, p in families.DEFAULT_PRESETS.items()}
    preset_models.update({p: m for p, m in experimental.EXPERIMENTS})
    cases = []
    for name in families.PRESETS:
        model = preset_models.get(name, "BODY_25")
        if registry.get_model(model).variants:
            cases.append((model, name, {}))
    for model_name in registry.list_models():
        model = registry.get_model(model_name)
        if model.variants:
            specs = tuple(render.DatasetSpec(f"/d/lmdb_{v.dataset}_{i}", None, v.op_model, v.dataset)
                          for i, v in enumerate(model.variants))
            cases.append((model_name, None, {"datasets": specs}))
    return cases


def _assert_fork_preconditions(net_param, scripts, where):
    data = [l for l in net_param.layer if l.type == "OPData"]
    assert len(data) == 1, where
    p = data[0].op_transform_param
    n = len(p.sources.split(";"))
    for name in PER_SOURCE_FIELDS:
        assert len(getattr(p, name).split(";")) == n, (where, name)
    occlusions = [int(v) for v in p.number_max_occlusions.split(";")]
    assert p.source_background or not any(occlusions), where
    assert p.source_background or p.prob_only_background == 0, where
    probabilities = [float(v) for v in p.probabilities.split(";")]
    assert all(0 <= v <= 1 for v in probabilities), where
    assert abs(sum(probabilities) + p.prob_only_background - 1) <= 1e-6, where
    for script in scripts.values():          # train_pose.sh and resume_train.sh check before launching
        check = script.index("openpose-train fork-check pose_training.prototxt")
        assert check < script.index('${CAFFE:-openpose-train} "${ARGS[@]}"'), where


@pytest.mark.parametrize("background", [None, "", "/d/lmdb_background"], ids=["default", "none", "given"])
def test_every_preset_and_model_renders_fork_safe(background):
    cases = _cases()
    yaml_model = registry.load_skeleton_yaml(EXAMPLE_YAML)
    registry.register(yaml_model)
    try:
        cases.append((yaml_model.name, "tiny", {"datasets": tuple(
            render.DatasetSpec(f"/d/lmdb_{v.dataset}", None, v.op_model, v.dataset) for v in yaml_model.variants)}))
        assert {p for _, p, _ in cases} >= set(families.PRESETS) - {"mpi", "mpi_4_stages"}   # MPI: deploy only
        for model, preset, options in cases:
            if background is not None:
                options = dict(options, background_lmdb=background)
            where = f"{model}/{preset}/{background}"
            text = render.render_training(model, preset, **options)
            net_param = caffe_io.parse_prototxt(text, caffe_pb2.NetParameter())
            _assert_fork_preconditions(net_param, render.render_scripts(model, preset, **options), where)
            has_background = background != "" and not (background is None and "datasets" in options)
            assert bool(net_param.layer[0].op_transform_param.source_background) == has_background, where
    finally:
        registry._REGISTRY.pop(yaml_model.name, None)
