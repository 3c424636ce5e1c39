"""Grounding DINO backends: the transformers one on a tiny randomly initialised model saved in the Hugging Face
layout (loaded by the same path as a real model), the outputs→detections conversions on hand-made outputs, the
load errors, and the groundingdino-py backend without its package (stand-ins, named as such, where it would run).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import torch

from grounding.detection import Detection
from grounding.dino_outputs import (
    PhraseSpan,
    cxcywh_to_xyxy_px,
    detections_from_gdino_predict,
    detections_from_token_logits,
    format_prompt,
    phrase_spans,
    suppress_duplicates,
)
from grounding.errors import UnsupportedCommand
from grounding.gdino_py import GroundingDinoPy, find_config, input_size, load_state_dict, preprocess
from grounding.hf_dino import HFGroundingDino, check_model_dir
from grounding.protocol import Grounder

torch.set_num_threads(1)

WORDS = ["red", "cup", "blue", "box", "green", "ball", "the"]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", *WORDS]
ID = {w: i for i, w in enumerate(VOCAB)}
BOUNDARY = frozenset({ID["[PAD]"], ID["[CLS]"], ID["[SEP]"], ID["."]})


def decode(ids: list[int]) -> str:
    return " ".join(VOCAB[i] for i in ids)


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised Grounding DINO (Swin 4 stages of one block, BERT of one layer, d_model 32, 10 queries)
    with a locally built tokenizer and a 64 px processor, saved as a Hugging Face model directory."""
    tf: Any = importlib.import_module("transformers")  # untyped here: its stubs vary by release
    out = tmp_path_factory.mktemp("tiny-grounding-dino")
    (out / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    tokenizer = tf.BertTokenizerFast(vocab=dict(ID), do_lower_case=True)
    swin = tf.SwinConfig(
        image_size=64, patch_size=4, embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], window_size=2,
        out_indices=[2, 3, 4],
    )  # fmt: skip
    bert = tf.BertConfig(
        vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=64,
    )  # fmt: skip
    # two decoder layers: the model ties every later layer's box head to the first one's
    config = tf.GroundingDinoConfig(
        backbone_config=swin, text_config=bert, d_model=32, encoder_layers=1, decoder_layers=2, encoder_ffn_dim=64,
        decoder_ffn_dim=64, encoder_attention_heads=2, decoder_attention_heads=2, num_queries=10, max_text_len=32,
    )  # fmt: skip
    torch.manual_seed(0)
    tf.GroundingDinoForObjectDetection(config).eval().save_pretrained(out)
    image_processor = tf.GroundingDinoImageProcessorPil(size={"shortest_edge": 64, "longest_edge": 96})
    tf.GroundingDinoProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path) -> HFGroundingDino:
    return HFGroundingDino.load(str(tiny_model_dir), box_threshold=0.05, text_threshold=0.04, duplicate_iou=None)


@pytest.fixture
def image() -> npt.NDArray[np.uint8]:
    return np.random.default_rng(3).integers(0, 256, (48, 80, 3), dtype=np.uint8)


# (a) the tiny model through the real loading path


def test_tiny_model_grounds_well_formed_detections(tiny: HFGroundingDino, image: npt.NDArray[np.uint8]) -> None:
    assert isinstance(tiny, Grounder)
    dets = tiny.ground(image, "Red cup")
    assert dets, "random weights give scores well above 0.05: an empty result means the conversion lost them"
    for d in dets:
        x0, y0, x1, y1 = d.box_xyxy_px
        assert 0.0 <= x0 < x1 <= 80.0
        assert 0.0 <= y0 < y1 <= 48.0
        assert 0.05 < d.score <= 1.0
        assert set(d.phrase.split()) <= {"red", "cup"}
        assert d.phrase
    assert [d.score for d in dets] == sorted((d.score for d in dets), reverse=True)


def test_prompt_reaches_the_model_formatted(tiny: HFGroundingDino, image: npt.NDArray[np.uint8]) -> None:
    _, inputs, phrases = tiny.raw_outputs(image, "Red  Cup. blue box")
    assert phrases == ("red cup", "blue box")
    assert decode(inputs["input_ids"][0].tolist()) == "[CLS] red cup . blue box . [SEP]"
    for d in tiny.ground(image, "Red  Cup. blue box"):
        words = set(d.phrase.split())
        assert words <= {"red", "cup"} or words <= {"blue", "box"}, d.phrase


def test_conversion_matches_the_processors_post_processing(tiny: HFGroundingDino, image: npt.NDArray[np.uint8]) -> None:
    outputs, inputs, phrases = tiny.raw_outputs(image, "red cup")
    ids = inputs["input_ids"][0].tolist()
    # The processor scores a query by its best token over the whole prompt, special tokens and periods included;
    # ours by the phrase's tokens. A trained model leaves those tokens low; with random weights we silence them
    # so that both read the same probabilities.
    spans = phrase_spans(ids, phrases, BOUNDARY)
    silenced = torch.full_like(outputs.logits, float("-inf"))
    silenced[..., list(spans[0].positions)] = outputs.logits[..., list(spans[0].positions)]
    outputs.logits = silenced
    h, w = image.shape[:2]
    ref = tiny.processor.post_process_grounded_object_detection(
        outputs, inputs["input_ids"], threshold=0.3, text_threshold=0.25, target_sizes=[(h, w)]
    )[0]
    ours = detections_from_token_logits(
        silenced[0].numpy(), outputs.pred_boxes[0].numpy(), ids, spans, (h, w), tiny.processor.tokenizer.decode,
        box_threshold=0.3, text_threshold=0.25,
    )  # fmt: skip
    order = torch.argsort(ref["scores"], descending=True, stable=True)
    assert len(ours) == len(order) > 0
    ref_boxes = ref["boxes"][order].clone()
    ref_boxes[:, 0::2] = ref_boxes[:, 0::2].clamp(0, w)
    ref_boxes[:, 1::2] = ref_boxes[:, 1::2].clamp(0, h)
    np.testing.assert_allclose([d.box_xyxy_px for d in ours], ref_boxes.numpy(), atol=1e-4)
    np.testing.assert_allclose([d.score for d in ours], ref["scores"][order].numpy(), atol=1e-4)
    assert [d.phrase for d in ours] == [ref["text_labels"][int(i)] for i in order]


def test_service_loads_the_transformers_backend(tiny_model_dir: Path) -> None:
    from grounding.service import load_grounding_service

    service = load_grounding_service("transformers", model=tiny_model_dir)
    assert isinstance(service.grounder, HFGroundingDino)
    assert service.grounder.box_threshold == 0.35


# (b) the conversion on hand-made outputs

IDS = [ID[t] for t in ["[CLS]", "red", "cup", ".", "blue", "box", ".", "[SEP]"]]
SPANS = [PhraseSpan("red cup", (1, 2)), PhraseSpan("blue box", (4, 5))]


def logit(p: float) -> float:
    return float(np.log(p / (1 - p)))


def hand_logits() -> npt.NDArray[np.float64]:
    lg = np.full((4, 12), -10.0)
    lg[:, len(IDS) :] = -np.inf  # past the prompt, as the model pads
    lg[0, 1], lg[0, 2] = logit(0.9), logit(0.6)  # red cup, both words
    lg[1, 4], lg[1, 5] = logit(0.3), logit(0.7)  # blue box, "box" the stronger word
    lg[1, 1] = logit(0.5)  # ...and weaker on "red"
    lg[2, 0], lg[2, 7], lg[2, 3] = 9.0, 9.0, 9.0  # special tokens and a period only: not a match
    lg[3, 2] = logit(0.4)  # cup, weakly
    return lg


BOXES = np.array([[0.5, 0.5, 0.2, 0.4], [0.95, 0.1, 0.2, 0.4], [0.5, 0.5, 0.5, 0.5], [0.25, 0.75, 0.1, 0.1]])


def test_token_logits_to_exact_detections() -> None:
    dets = detections_from_token_logits(
        hand_logits(), BOXES, IDS, SPANS, (100, 200), decode, box_threshold=0.35, text_threshold=0.25
    )
    expected = [
        Detection((80.0, 30.0, 120.0, 70.0), 0.9, "red cup"),
        Detection((170.0, 0.0, 200.0, 30.0), 0.7, "blue box"),
        Detection((40.0, 70.0, 60.0, 80.0), 0.4, "cup"),
    ]
    assert len(dets) == len(expected)
    for got, want in zip(dets, expected, strict=True):
        assert got.box_xyxy_px == pytest.approx(want.box_xyxy_px, abs=1e-9)
        assert got.score == pytest.approx(want.score, abs=1e-9)
        assert got.phrase == want.phrase


def test_thresholds_select_boxes_and_words() -> None:
    def run(box: float, text: float) -> list[Detection]:
        return detections_from_token_logits(
            hand_logits(), BOXES, IDS, SPANS, (100, 200), decode, box_threshold=box, text_threshold=text
        )

    assert [d.phrase for d in run(0.35, 0.65)] == ["red", "box", "cup"]
    assert [d.phrase for d in run(0.35, 0.95)] == ["red", "box", "cup"]  # none passes: the top token
    assert [d.score for d in run(0.75, 0.25)] == pytest.approx([0.9])
    assert run(0.95, 0.25) == []
    even = np.zeros((2, 8))  # every probability exactly 0.5
    # a score must exceed the threshold, not reach it
    assert detections_from_token_logits(even, BOXES[:2], IDS, SPANS, (9, 9), decode, box_threshold=0.5,
                                        text_threshold=0.25) == []  # fmt: skip
    assert len(detections_from_token_logits(even, BOXES[:2], IDS, SPANS, (9, 9), decode, box_threshold=0.49,
                                            text_threshold=0.25)) == 2  # fmt: skip


def test_no_match_and_degenerate_boxes_give_nothing() -> None:
    silent = np.full((3, 8), -np.inf)
    assert detections_from_token_logits(silent, BOXES[:3], IDS, SPANS, (10, 10), decode, box_threshold=0.3,
                                        text_threshold=0.25) == []  # fmt: skip
    flat = BOXES.copy()
    flat[0, 2] = 0.0  # no width
    dets = detections_from_token_logits(
        hand_logits(), flat, IDS, SPANS, (100, 200), decode, box_threshold=0.35, text_threshold=0.25
    )
    assert [d.phrase for d in dets] == ["blue box", "cup"]


def test_conversion_rejects_malformed_outputs() -> None:
    with pytest.raises(ValueError, match=r"boxes must be \(queries, 4\)"):
        detections_from_token_logits(hand_logits(), BOXES[:2], IDS, SPANS, (9, 9), decode, box_threshold=0.3,
                                     text_threshold=0.2)  # fmt: skip
    with pytest.raises(ValueError, match="outside the prompt"):
        detections_from_token_logits(hand_logits(), BOXES, IDS, [PhraseSpan("x", (9,))], (9, 9), decode,
                                     box_threshold=0.3, text_threshold=0.2)  # fmt: skip
    for bad in (0.0, 1.0, -0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"box_threshold must be a probability within \(0, 1\)"):
            detections_from_token_logits(hand_logits(), BOXES, IDS, SPANS, (9, 9), decode, box_threshold=bad,
                                         text_threshold=0.2)  # fmt: skip


def test_prompt_formatting_and_phrase_spans() -> None:
    assert format_prompt("Red Cup") == ("red cup.", ("red cup",))
    assert format_prompt(" red  cup. BLUE box. ") == ("red cup. blue box.", ("red cup", "blue box"))
    for empty in ("", "  . .", "\n"):
        with pytest.raises(UnsupportedCommand, match="names no object"):
            format_prompt(empty)
    assert phrase_spans(IDS, ["red cup", "blue box"], BOUNDARY) == SPANS
    with pytest.raises(ValueError, match="form 2 phrase"):
        phrase_spans(IDS, ["red cup"], BOUNDARY)


def test_box_conversion_and_duplicate_suppression() -> None:
    got = cxcywh_to_xyxy_px([[0.5, 0.5, 1.0, 1.0], [0.0, 1.0, 0.5, 0.5]], (10, 20))
    np.testing.assert_allclose(got, np.array([[0.0, 0.0, 20.0, 10.0], [0.0, 7.5, 5.0, 10.0]]))
    a = Detection((0, 0, 10, 10), 0.9, "cup")
    b = Detection((0.5, 0, 10, 10), 0.8, "cup")  # IoU 0.95 with a
    c = Detection((20, 0, 30, 10), 0.7, "cup")
    assert suppress_duplicates([a, b, c], 0.8) == [a, c]
    assert suppress_duplicates([a, b, c], 1.0) == [a, b, c]


# (c) load and input errors


def test_missing_directory_says_how_to_fetch(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist") as e:
        HFGroundingDino.load(str(tmp_path / "grounding-dino-tiny"))
    assert "hf download IDEA-Research/grounding-dino-tiny --local-dir" in str(e.value)


def test_uncached_hub_id_offline_says_how_to_fetch(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(FileNotFoundError, match="not in the Hugging Face cache") as e:
        HFGroundingDino.load("sam2grasp-tests/no-such-model", local_files_only=True)
    assert "hf download sam2grasp-tests/no-such-model" in str(e.value)
    assert "downloading is off" in str(e.value)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # None follows the environment: cache only, no network wait
    with pytest.raises(FileNotFoundError, match="downloading is off"):
        HFGroundingDino.load("sam2grasp-tests/no-such-model")


def test_directory_that_is_not_a_grounding_dino_model(tmp_path: Path, tiny_model_dir: Path) -> None:
    with pytest.raises(ValueError, match=r"no config\.json"):
        HFGroundingDino.load(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="model_type is 'bert', expected 'grounding-dino'"):
        HFGroundingDino.load(str(tmp_path))
    (tmp_path / "config.json").write_text((tiny_model_dir / "config.json").read_text())
    with pytest.raises(ValueError, match="lacks the model's weights"):
        check_model_dir(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"not safetensors")
    for name in ("processor_config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt"):
        (tmp_path / name).write_bytes((tiny_model_dir / name).read_bytes())
    with pytest.raises(ValueError, match="incomplete or unreadable"):
        HFGroundingDino.load(str(tmp_path))


def test_bad_thresholds_and_devices(tiny_model_dir: Path) -> None:
    for kw in ({"box_threshold": 0.0}, {"box_threshold": 1.2}, {"text_threshold": -0.5}, {"text_threshold": 1.0}):
        with pytest.raises(ValueError, match=r"within \(0, 1\)"):
            HFGroundingDino.load(str(tiny_model_dir), **kw)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'cpu', 'cuda'"):
        HFGroundingDino.load(str(tiny_model_dir), device="tpu")
    with pytest.raises(ValueError, match="CUDA option"):
        HFGroundingDino.load(str(tiny_model_dir), autocast_bf16=True)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            HFGroundingDino.load(str(tiny_model_dir), device="cuda")


def test_bad_images_and_text(tiny: HFGroundingDino, image: npt.NDArray[np.uint8]) -> None:
    bad: list[Any] = [image.astype(np.float32), image[..., 0], np.dstack([image, image[..., :1]]), image[:1],
                      image.tolist()]  # fmt: skip
    for b in bad:
        with pytest.raises(ValueError, match="image must be"):
            tiny.ground(b, "red cup")
    with pytest.raises(UnsupportedCommand):
        tiny.ground(image, " . ")


# (d) groundingdino-py without its package


def test_gdino_predict_outputs_to_exact_detections() -> None:
    boxes = np.array([[0.5, 0.5, 0.2, 0.4], [0.95, 0.1, 0.2, 0.4], [0.5, 0.5, 0.1, 0.1], [0.1, 0.1, 0.0, 0.1]])
    scores = np.array([0.6, 0.8, 0.3, 0.9])
    dets = detections_from_gdino_predict(
        boxes, scores, ["red cup", "", "cup", "cup"], (100, 200), box_threshold=0.35, fallback_phrase="red cup"
    )
    # 0.3 is below the threshold and the zero-width box has no area; the empty phrase becomes the prompt's
    assert [d.phrase for d in dets] == ["red cup", "red cup"]
    np.testing.assert_allclose([d.box_xyxy_px for d in dets], [[170, 0, 200, 30], [80, 30, 120, 70]], atol=1e-9)
    assert [d.score for d in dets] == pytest.approx([0.8, 0.6])
    assert detections_from_gdino_predict(np.zeros((0, 4)), [], [], (9, 9), box_threshold=0.3,
                                         fallback_phrase="x") == []  # fmt: skip
    with pytest.raises(ValueError, match="N phrases"):
        detections_from_gdino_predict(boxes, scores, ["a"], (9, 9), box_threshold=0.3, fallback_phrase="x")


def test_missing_package_says_which_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "groundingdino", None)
    with pytest.raises(ImportError, match=r"pip install 'sam2grasp\[groundingdino\]'"):
        GroundingDinoPy.load(tmp_path / "groundingdino_swint_ogc.pth")


def test_gdino_input_scaling_and_config_lookup(tmp_path: Path) -> None:
    assert input_size(480, 640) == (800, 1066)
    assert input_size(640, 480) == (1066, 800)
    assert input_size(100, 1000) == (133, 1330)  # the shorter side is scaled, then the longer follows
    x = preprocess(np.full((30, 40, 3), 255, np.uint8))
    assert tuple(x.shape) == (3, 800, 1066)
    np.testing.assert_allclose(x[:, 0, 0].numpy(), [(1 - 0.485) / 0.229, (1 - 0.456) / 0.224, (1 - 0.406) / 0.225],
                               rtol=1e-5)  # fmt: skip
    ckpt = tmp_path / "weights.pth"
    with pytest.raises(FileNotFoundError, match="none"):
        find_config(ckpt)
    (tmp_path / "GroundingDINO_SwinT_OGC.py").write_text("")
    assert find_config(ckpt).name == "GroundingDINO_SwinT_OGC.py"
    (tmp_path / "other.py").write_text("")
    with pytest.raises(FileNotFoundError, match="no single"):
        find_config(ckpt)
    (tmp_path / "weights.py").write_text("")
    assert find_config(ckpt).name == "weights.py"


class StandInPackage:
    """STAND-IN for the `groundingdino` package (not installable here): a one-layer model and a `predict` that
    records its call and returns fixed outputs in the package's format."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def build_model(self, args: Any) -> torch.nn.Module:
        return torch.nn.Linear(2, 1)

    def predict(self, model: Any, image: torch.Tensor, caption: str, box_threshold: float, text_threshold: float,
                device: str = "cuda") -> tuple[torch.Tensor, torch.Tensor, list[str]]:  # fmt: skip
        self.calls.append({"shape": tuple(image.shape), "caption": caption, "box": box_threshold, "device": device})
        return torch.tensor([[0.5, 0.5, 0.5, 0.5], [0.5, 0.5, 0.5, 0.5]]), torch.tensor([0.5, 0.9]), ["cup", "red"]


def test_gdino_load_and_ground_through_a_stand_in_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import grounding.gdino_py as gdino_py

    pkg = StandInPackage()
    sl_config = argparse.Namespace(fromfile=lambda path: argparse.Namespace())
    monkeypatch.setattr(gdino_py, "_import_package", lambda: (pkg.build_model, sl_config, pkg.predict))
    ckpt = tmp_path / "groundingdino_swint_ogc.pth"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        GroundingDinoPy.load(ckpt)
    torch.save({"model": {"module.weight": torch.ones(1, 2), "module.bias": torch.zeros(1)}}, ckpt)
    (tmp_path / "GroundingDINO_SwinT_OGC.py").write_text("")
    grounder = GroundingDinoPy.load(ckpt, box_threshold=0.4, duplicate_iou=None)
    assert isinstance(grounder, Grounder)
    assert torch.equal(grounder.model.weight, torch.ones(1, 2))
    dets = grounder.ground(np.zeros((60, 80, 3), np.uint8), "Red Cup")
    assert pkg.calls == [{"shape": (3, 800, 1066), "caption": "red cup.", "box": 0.4, "device": "cpu"}]
    assert [(d.box_xyxy_px, d.score, d.phrase) for d in dets] == [((20.0, 15.0, 60.0, 45.0), pytest.approx(0.9), "red"),
                                                                  ((20.0, 15.0, 60.0, 45.0), 0.5, "cup")]  # fmt: skip
    assert len(GroundingDinoPy(grounder.model, pkg.predict).ground(np.zeros((60, 80, 3), np.uint8), "cup")) == 1
    torch.save({"model": {"module.weight": torch.ones(1, 2)}}, ckpt)
    with pytest.raises(ValueError, match="1 parameters missing"):
        GroundingDinoPy.load(ckpt)


def test_gdino_checkpoints_load_tensors_only(tmp_path: Path) -> None:
    plain = tmp_path / "plain.pth"
    torch.save({"w": torch.ones(2)}, plain)
    assert list(load_state_dict(plain)) == ["w"]
    pickled = tmp_path / "pickled.pth"
    torch.save({"model": {"w": torch.ones(2)}, "args": argparse.Namespace(lr=1.0)}, pickled)
    with pytest.raises(ValueError, match="weights-only"):
        load_state_dict(pickled)
