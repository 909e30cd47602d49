"""Registry tables against upstream's own numbers (the fork's poseModel.cpp, OpenPose's poseParameters.cpp)."""
import pytest

from openpose_train.generator import registry as reg

# the fork's model strings -> (category, P, P_lmdb, E, bkg, 2C), typed in from its tables.
FORK_TABLE = {
    "COCO_18": ("COCO", 18, 17, 19, 1, 114),
    "DOME_18": ("DOME", 18, 19, 19, 1, 114),
    "COCO_19": ("COCO", 19, 17, 20, 1, 120),
    "DOME_19": ("DOME", 19, 19, 20, 1, 120),
    "DOME_59": ("DOME", 59, 59, 60, 1, 360),
    "COCO_59_17": ("COCO", 59, 17, 60, 1, 360),
    "MPII_59": ("HAND", 59, 59, 60, 1, 360),
    "COCO_19b": ("COCO", 19, 17, 22, 1, 128),
    "COCO_19_V2": ("COCO", 19, 17, 18, 1, 112),
    "COCO_25": ("COCO", 25, 23, 26, 1, 156),
    "COCO_25_17": ("COCO", 25, 17, 26, 1, 156),
    "MPII_65_42": ("HAND", 65, 42, 66, 1, 396),
    "CAR_12": ("CAR", 12, 14, 11, 1, 70),
    "COCO_25E": ("COCO", 25, 23, 38, 1, 204),
    "COCO_25_17E": ("COCO", 25, 17, 38, 1, 204),
    "COCO_23": ("COCO", 23, 23, 36, 1, 192),
    "COCO_23_17": ("COCO", 23, 17, 36, 1, 192),
    "CAR_22": ("CAR", 22, 22, 32, 1, 174),
    "COCO_19E": ("COCO", 19, 17, 30, 1, 160),
    "COCO_25B_23": ("COCO", 25, 23, 36, 0, 194),
    "COCO_25B_17": ("COCO", 25, 17, 36, 0, 194),
    "MPII_25B_16": ("MPII", 25, 16, 36, 0, 194),
    "PT_25B_15": ("PT", 25, 15, 36, 0, 194),
    "COCO_95_23": ("COCO", 95, 23, 113, 0, 642),
    "COCO_95_17": ("COCO", 95, 17, 113, 0, 642),
    "MPII_95_16": ("MPII", 95, 16, 113, 0, 642),
    "FACE_95_70": ("FACE", 95, 70, 113, 0, 642),
    "COCO_135_23": ("COCO", 135, 23, 152, 0, 878),
    "COCO_135_17": ("COCO", 135, 17, 152, 0, 878),
    "MPII_135_16": ("MPII", 135, 16, 152, 0, 878),
    "HAND_135_21": ("HAND", 135, 21, 152, 0, 878),
    "HAND_135_42": ("HAND", 135, 42, 152, 0, 878),
    "FACE_135_70": ("FACE", 135, 70, 152, 0, 878),
    "DOME_135": ("DOME", 135, 135, 152, 0, 878),
}


def test_every_fork_string_is_registered():
    upstream = {name for name in reg.list_training_variants()
                if reg.get_training_variant(name)[1].upstream}
    assert upstream == set(FORK_TABLE)


@pytest.mark.parametrize("op_model", sorted(FORK_TABLE))
def test_counts_match_the_fork_table(op_model):
    category, parts, lmdb_parts, pafs, bkg, label_channels = FORK_TABLE[op_model]
    model, variant = reg.get_training_variant(op_model)
    assert variant.category == category
    assert model.num_parts == parts == variant.num_parts
    assert variant.num_lmdb_parts == lmdb_parts
    assert model.num_pafs == pafs
    assert int(model.has_background) == bkg
    assert model.label_channels == label_channels
    # every source index is a valid LMDB point
    assert all(0 <= j < lmdb_parts for src in variant.sources for j in src)


def test_headline_label_channels():
    assert reg.get_model("BODY_25").label_channels == 156
    assert reg.get_model("COCO_18").label_channels == 114
    assert reg.get_model("BODY_25B").label_channels == 194
    assert reg.get_model("BODY_135").label_channels == 878


# OpenPose's raw POSE_MAP_INDEX (offsets inside the PAF block)
RAW_MAP_INDEX = {
    "BODY_25": [0, 1, 14, 15, 22, 23, 16, 17, 18, 19, 24, 25, 26, 27, 6, 7, 2, 3, 4, 5, 8, 9, 10,
                11, 12, 13, 30, 31, 32, 33, 36, 37, 34, 35, 38, 39, 20, 21, 28, 29]
    + list(range(40, 52)),
    "COCO": [12, 13, 20, 21, 14, 15, 16, 17, 22, 23, 24, 25, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11,
             28, 29, 30, 31, 34, 35, 32, 33, 36, 37, 18, 19, 26, 27],
    "MPI": list(range(28)),
    "MPI_4_layers": list(range(28)),
    "BODY_25B": list(range(72)),
    "BODY_135": list(range(304)),
}


@pytest.mark.parametrize("name", sorted(RAW_MAP_INDEX))
def test_map_index_equals_openposes(name):
    model = reg.get_model(name)
    flat = [c for xy in model.map_index for c in xy]
    assert flat == RAW_MAP_INDEX[name]


def test_body_19_map_index_is_body_25_prefix():
    assert reg.get_model("BODY_19").map_index == reg.get_model("BODY_25").map_index[:20]


def test_body_135_coco_json_lists_by_name():
    model = reg.get_model("BODY_135")
    assert [model.parts[i] for i in model.to_coco_face][:2] == ["FaceContour0", "FaceContour1"]
    assert len(model.to_coco_face) == 68 and model.parts[model.to_coco_face[-1]] == "IMouth7"
    assert [model.parts[i] for i in model.to_coco_hand21[:2]] == ["RWrist", "RThumb1CMC"]
    hand42 = [model.parts[i] for i in model.to_coco_hand42]
    assert hand42[0] == "LWrist" and hand42[20] == "LPinky4FingerTip" and hand42[21] == "RWrist"
    assert len(hand42) == 42 and hand42[-1] == "RPinky4FingerTip"


def test_body_25_runtime_pairs_and_absolute_channels():
    # OpenPose's absolute channels: "0:1-8 = 26/27", "1:1-2 = 40/41", "13:1-0 = 56/57", "25:11-24 = 76/77"
    model = reg.get_model("BODY_25")
    start = model.num_parts + 1
    for k, pair, x in [(0, (1, 8), 26), (1, (1, 2), 40), (13, (1, 0), 56), (19, (5, 18), 54),
                       (25, (11, 24), 76)]:
        assert model.runtime_pairs[k] == pair
        assert start + model.map_index[k][0] == x
    coco = reg.get_model("COCO")
    assert coco.runtime_pairs[6] == (1, 8) and 19 + coco.map_index[6][0] == 19
    assert coco.runtime_pairs[17] == (2, 16) and 19 + coco.map_index[17][0] == 37


def test_body_25b_pairs_match_appendix_b():
    a = [0, 0, 1, 2, 0, 0, 5, 6, 7, 8, 5, 6, 11, 12, 13, 14, 15, 19, 15, 16, 22, 16, 5, 5, 6, 6, 3,
         3, 4, 5, 6, 9, 9, 10, 11, 15]
    b = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 19, 20, 21, 22, 23, 24, 17, 18, 17,
         18, 4, 5, 6, 9, 10, 10, 11, 12, 12, 16]
    assert reg.get_model("BODY_25B").paf_pairs == tuple(zip(a, b))


def test_body_95_face_pafs_match_the_fork_list():
    text = ("25-26 26-27 27-28 28-29 29-30 30-31 31-32 32-33 33-34 34-35 35-36 36-37 37-38 38-39 "
            "39-40 40-41 25-42 41-51 42-43 43-44 44-45 45-46 46-47 47-48 48-49 49-50 50-51 46-52 "
            "47-52 52-53 53-54 54-55 55-58 58-57 57-56 58-59 59-60 52-64 52-67 61-62 62-63 63-64 "
            "64-65 65-66 67-68 68-69 69-70 70-71 71-72 58-76 73-74 74-75 75-76 76-77 77-78 78-79 "
            "79-80 80-81 81-82 82-83 83-84 73-85 79-89 85-86 86-87 87-88 88-89 89-90 90-91 91-92 "
            "61-93 64-93 67-94 70-94")
    pairs = tuple(tuple(int(v) for v in p.split("-")) for p in text.split())
    model = reg.get_model("BODY_95")
    assert model.paf_pairs[36:39] == ((0, 55), (2, 64), (1, 67))
    assert model.paf_pairs[39:] == pairs
    body135 = reg.get_model("BODY_135")
    assert body135.paf_pairs[75:78] == ((0, 95), (2, 104), (1, 107))
    assert body135.paf_pairs[22:25] == ((5, 17), (17, 18), (6, 17))
    assert body135.paf_pairs[35:39] == ((9, 25), (25, 26), (26, 27), (27, 28))
    assert body135.paf_pairs[55] == (10, 45)


@pytest.mark.parametrize("name", reg.list_models())
def test_flip_pairs_are_symmetric_involutions_within_range(name):
    model = reg.get_model(name)
    seen = set()
    for a, b in model.flip_pairs:
        assert 0 <= a < model.num_parts and 0 <= b < model.num_parts and a != b
        assert a not in seen and b not in seen
        seen |= {a, b}
    perm = list(range(model.num_parts))
    for a, b in model.flip_pairs:
        perm[a], perm[b] = b, a
    assert [perm[p] for p in perm] == list(range(model.num_parts))
    # a flip maps every left part to a right part (names are L/R mirrored), where names say so
    for a, b in model.flip_pairs:
        na, nb = model.parts[a], model.parts[b]
        if na[0] in "LR" and nb[0] in "LR" and na[1:] == nb[1:]:
            assert na[0] != nb[0]


@pytest.mark.parametrize("name", reg.list_models())
def test_tables_in_range(name):
    model = reg.get_model(name)
    assert len(set(model.parts)) == model.num_parts
    assert len(model.sigma_ratios) == model.num_parts
    assert len(set(model.paf_pairs)) == model.num_pafs
    for a, b in model.paf_pairs:
        assert 0 <= a < model.num_parts and 0 <= b < model.num_parts and a != b
    assert sorted(model.runtime_pairs) == sorted(model.paf_pairs)
    for variant in model.variants:
        assert variant.num_parts == model.num_parts
        layout = reg.get_dataset_layout(variant.dataset)
        assert variant.num_lmdb_parts == layout.num_keypoints
        assert all(0 <= j < layout.num_keypoints for src in variant.sources for j in src)
    for table in (model.to_coco17, model.to_coco_foot, model.to_coco_face, model.to_coco_hand21,
                  model.to_coco_hand42):
        if table is not None:
            assert all(-1 <= i < model.num_parts for i in table)


def test_flip_counts_match_the_fork():
    assert len(reg.get_model("BODY_95").flip_pairs) == 41
    assert len(reg.get_model("BODY_135").flip_pairs) == 61


def test_coco17_reorders_by_name():
    # COCO order is nose, l/r eye, l/r ear, ... : check each reorder by the model's part names
    coco = ["Nose", "LEye", "REye", "LEar", "REar", "LShoulder", "RShoulder", "LElbow", "RElbow",
            "LWrist", "RWrist", "LHip", "RHip", "LKnee", "RKnee", "LAnkle", "RAnkle"]
    for name in ("BODY_25", "BODY_25B", "COCO_18", "BODY_23", "BODY_135"):
        model = reg.get_model(name)
        assert [model.parts[i] for i in model.to_coco17] == coco, name
        if model.to_coco_foot is not None:
            assert [model.parts[i] for i in model.to_coco_foot] == [
                "LBigToe", "LSmallToe", "LHeel", "RBigToe", "RSmallToe", "RHeel"]
    assert reg.get_model("BODY_25").to_coco17 == (0, 16, 15, 18, 17, 5, 2, 6, 3, 7, 4, 12, 9, 13,
                                                  10, 14, 11)
    assert reg.get_model("BODY_25B").to_coco17 == tuple(range(17))
    assert reg.get_model("MPI").to_coco17 is None


def test_averaged_sources():
    _, v = reg.get_training_variant("COCO_25_17")
    assert v.sources[1] == (5, 6)      # neck = avg(shoulders)
    assert v.sources[8] == (11, 12)    # mid-hip = avg(hips)
    assert v.sources[2] == (6,) and v.sources[19:] == ((),) * 6
    _, v = reg.get_training_variant("FACE_135_70")
    assert v.sources[0] == (27, 28, 29, 30, 31, 32, 34, 35)
    assert v.sources[133] == tuple(range(36, 42)) and v.sources[134] == tuple(range(42, 48))
    assert v.sources[65] == (0,) and v.sources[132] == (67,)


def test_channels_to_mask_rules():
    _, v = reg.get_training_variant("COCO_25")
    non_empty = sorted(set(range(25)) - set(v.empty_mask_parts))
    assert non_empty == [1, 8, 11, 14, 19, 20, 21, 22, 23, 24]
    _, v = reg.get_training_variant("COCO_25B_17")
    assert v.minus1_parts == (17, 18) and 17 not in v.empty_mask_parts
    _, v = reg.get_training_variant("COCO_135_17")
    assert v.minus1_parts == tuple(range(17, 135)) and v.empty_mask_parts == ()
    _, v = reg.get_training_variant("HAND_135_21")
    assert v.minus1_parts == (9,) + tuple(range(25, 45))
    assert v.sources[10] == (0,) and v.sources[45] == (1,)
    # global masking (docs/labels.md §Masks) runs iff P > P_lmdb (fork) or MPII_59; always for our extensions
    assert reg.get_training_variant("COCO_25_17")[1].global_missing_mask
    assert not reg.get_training_variant("DOME_135")[1].global_missing_mask
    assert reg.get_training_variant("MPII_59")[1].global_missing_mask
    assert reg.get_training_variant("COCO_25B_133")[1].global_missing_mask


def test_mpii_and_posetrack_mappings_by_name():
    mpii = reg.get_dataset_layout("mpii").keypoints
    model, v = reg.get_training_variant("MPII_25B_16")
    assert {model.parts[i]: mpii[s[0]] for i, s in enumerate(v.sources) if s} == {
        "LShoulder": "l_shoulder", "RShoulder": "r_shoulder", "Neck": "upper_neck",
        "HeadTop": "head_top"}
    pt = reg.get_dataset_layout("posetrack").keypoints
    model, v = reg.get_training_variant("PT_25B_15")
    for i, s in enumerate(v.sources):
        if s and i < 17:
            part, kp = model.parts[i].lower(), pt[s[0]]
            side = {"l": "left_", "r": "right_"}[part[0]] if part != "nose" else ""
            assert kp.startswith(side) and kp.split("_")[-1][:3] in part


def test_wholebody_variants():
    layout = reg.get_dataset_layout("wholebody")
    assert layout.num_keypoints == 133 and layout.json_fields == (
        "keypoints", "foot_kpts", "face_kpts", "lefthand_kpts", "righthand_kpts")
    model, v = reg.get_training_variant("COCO_135_133")
    assert not v.upstream and v.num_lmdb_parts == 133
    names = layout.keypoints
    assert names[v.sources[25][0]] == "left_thumb1" and names[v.sources[64][0]] == "right_pinky_finger4"
    assert names[v.sources[65][0]] == "face_0" and names[v.sources[132][0]] == "face_67"
    assert [names[j] for j in v.sources[133]] == [f"face_{k}" for k in range(36, 42)]
    assert names[v.sources[9][0]] == "left_wrist" and names[v.sources[19][0]] == "left_big_toe"
    assert v.sources[17] == () and v.sources[18] == ()
    _, v25 = reg.get_training_variant("COCO_25_133")
    assert v25.sources[1] == (5, 6) and names[v25.sources[24][0]] == "right_heel"
    _, v25b = reg.get_training_variant("COCO_25B_133")
    assert v25b.sources[:17] == tuple((i,) for i in range(17))


def test_dataset_layouts():
    expect = {"coco": (17, "COCO", True), "coco_foot": (23, "COCO", True),
              "wholebody": (133, "COCO_WholeBody", True), "mpii": (16, "MPII", True),
              "posetrack": (15, "posetrack", True), "hand21": (21, "hand21_dome", True),
              "hand42": (42, "hand42_mpii", True), "face70": (70, "face70_mask_out", True),
              "dome135": (135, "dome135", False)}
    for key, (n, string, mask) in expect.items():
        layout = reg.get_dataset_layout(key)
        assert (layout.num_keypoints, layout.lmdb_dataset, layout.has_mask) == (n, string, mask)
        assert len(set(layout.keypoints)) == n
        assert len(layout.validity_fields) in (0, len(layout.json_fields))
    with pytest.raises(reg.UnknownModelError, match="wholebody"):
        reg.get_dataset_layout("nope")


def test_thresholds_and_files():
    assert reg.get_model("MPI").thresholds.nms_threshold == 0.6
    assert reg.get_model("MPI_4_layers").thresholds.nms_threshold == 0.3
    assert reg.get_model("MPI_15_4").thresholds.connect_inter_threshold == 0.01
    assert reg.get_model("BODY_25").thresholds.nms_threshold == 0.05
    m = reg.get_model("MPI_15_4")
    assert (m.model_folder, m.deploy_name, m.caffemodel_name) == (
        "pose/mpi", "pose_deploy_linevec_faster_4_stages.prototxt", "pose_iter_160000.caffemodel")
    assert reg.get_model("COCO").caffemodel_name == "pose_iter_440000.caffemodel"
    assert reg.get_model("BODY_25").caffemodel_name == "pose_iter_584000.caffemodel"
    assert reg.get_model("HAND_21").model_folder == "hand"
    assert reg.get_model("HAND_21").num_channels == 22
    assert reg.get_model("FACE_70").num_channels == 71
    assert reg.get_model("BODY_135").sigma_ratios[25] == pytest.approx(5.75 / 7)
    assert reg.get_model("BODY_135").sigma_ratios[24] == 1.0


def test_unknown_names_list_known_ones():
    with pytest.raises(reg.UnknownModelError) as err:
        reg.get_model("BODY_26")
    assert "BODY_25" in str(err.value) and "unknown model 'BODY_26'" in str(err.value)
    with pytest.raises(reg.UnknownModelError, match="COCO_25B_17"):
        reg.get_training_variant("COCO_26")
    with pytest.raises(reg.UnknownModelError):
        reg.get_model("")


_SIDE = {"L": "left_", "R": "right_"}
_FINGER = {"Thumb": "thumb", "Index": "forefinger", "Middle": "middle_finger",
           "Ring": "ring_finger", "Pinky": "pinky_finger"}
_SNAKE = {"Shoulder": "shoulder", "Elbow": "elbow", "Wrist": "wrist", "Hip": "hip", "Knee": "knee",
          "Ankle": "ankle", "Eye": "eye", "Ear": "ear", "BigToe": "big_toe",
          "SmallToe": "small_toe", "Heel": "heel"}


def coco_style_name(part, hand_prefix=""):
    """Model part name -> the COCO / COCO-WholeBody keypoint name it must come from."""
    import re
    if part == "Nose":
        return "nose"
    m = re.fullmatch(r"([LR]?)(Thumb|Index|Middle|Ring|Pinky)(\d)\w+", part)
    if m:
        side = _SIDE[m.group(1)] if m.group(1) else hand_prefix
        return f"{side}{_FINGER[m.group(2)]}{m.group(3)}"
    m = re.fullmatch(r"([LR])(\w+)", part)
    if m and m.group(2) in _SNAKE:
        return _SIDE[m.group(1)] + _SNAKE[m.group(2)]
    return None


@pytest.mark.parametrize("op_model", [
    "COCO_18", "COCO_19", "COCO_25", "COCO_25_17", "COCO_25_133", "COCO_25E", "COCO_23",
    "COCO_25B_23", "COCO_25B_17", "COCO_25B_133", "COCO_135_23", "COCO_135_133", "HAND_135_21",
    "HAND_135_42", "COCO_95_17", "COCO_59_17", "COCO_19b", "MPII_65_42"])
def test_single_sources_match_by_keypoint_name(op_model):
    """Every copied point comes from the dataset keypoint of the same name (independent of tables)."""
    model, variant = reg.get_training_variant(op_model)
    names = reg.get_dataset_layout(variant.dataset).keypoints
    checked = 0
    for i, source in enumerate(variant.sources):
        if len(source) != 1:
            continue
        src_name = names[source[0]]
        part = model.parts[i]
        if variant.dataset == "hand21":     # single-hand data is a right hand
            expect = "hand_root" if part == "RWrist" else coco_style_name(part).replace("right_", "", 1)
            assert src_name == expect and part[0] == "R", (part, src_name)
        elif src_name.endswith("hand_root"):
            assert part in ("LWrist", "RWrist") and src_name.startswith(_SIDE[part[0]])
        elif src_name.startswith("face_"):
            assert model.parts[i] == reg.FACE_PARTS[int(src_name[5:])]
        else:
            assert src_name == coco_style_name(part), (part, src_name)
        checked += 1
    assert checked >= 15


def test_face_sources_by_name():
    for op_model in ("FACE_135_70", "COCO_135_133", "FACE_95_70"):
        model, variant = reg.get_training_variant(op_model)
        names = reg.get_dataset_layout(variant.dataset).keypoints
        for i, source in enumerate(variant.sources):
            if len(source) == 1 and names[source[0]].startswith("face_"):
                assert model.parts[i] == reg.FACE_PARTS[int(names[source[0]][5:])]
        pupils = [model.parts.index(p) for p in ("RPupil", "LPupil")]
        for p, eye in zip(pupils, ("REye", "LEye")):
            if len(variant.sources[p]) > 1:
                assert [reg.FACE_PARTS[int(names[j].split("_")[-1])] for j in variant.sources[p]] \
                    == [f"{eye}{k}" for k in range(6)]
