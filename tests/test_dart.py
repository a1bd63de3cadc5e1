"""Every Dart file mobilekit ships or packages is parsed by a real Dart grammar (tree-sitter-dart):
a syntax error (an ERROR or MISSING node) fails the suite, naming the file, line and column."""

from __future__ import annotations

from pathlib import Path

import pytest
import tree_sitter  # the test extra: pip install -e ".[test]"
import tree_sitter_dart

from mobilekit.families import FAMILIES
from mobilekit.package_data import DART_DECODER
from mobilekit.paths import PROJECT_ROOT

# The decoder every package gets (shipped inside mobilekit), each family's part of it and the example app.
SHIPPED = (
    sorted((PROJECT_ROOT / "mobilekit" / DART_DECODER).rglob("*.dart"))
    + [PROJECT_ROOT / "mobilekit" / family.dart_decoder for family in FAMILIES.values()]
    + sorted((PROJECT_ROOT / "flutter_assets").rglob("*.dart"))
)


def syntax_errors(source: bytes) -> list[str]:
    """``line:column kind`` of every ERROR or MISSING node (1-based positions)."""
    parser = tree_sitter.Parser(tree_sitter.Language(tree_sitter_dart.language()))
    found: list[str] = []
    stack = [parser.parse(source).root_node]
    while stack:
        node = stack.pop()
        if node.is_error or node.is_missing:
            kind = f"missing {node.type}" if node.is_missing else "unexpected text"
            found.append(f"{node.start_point[0] + 1}:{node.start_point[1] + 1} {kind}")
        stack.extend(node.children)
    return sorted(found)


def test_the_parser_reports_what_it_should():
    assert syntax_errors(b"int twice(int x) { return 2 * x; }") == []
    assert syntax_errors(b"void main() { var x = 1 }")  # missing semicolon
    assert syntax_errors(b"double f(double a) { return a * ; }")  # missing operand


def test_mobilekit_ships_dart_sources():
    assert {p.name for p in SHIPPED} >= {"face_decoder.dart", "camera_input.dart", "main.dart"}, SHIPPED


@pytest.mark.parametrize("path", SHIPPED, ids=[p.relative_to(PROJECT_ROOT).as_posix() for p in SHIPPED])
def test_shipped_dart_parses(path: Path):
    errors = syntax_errors(path.read_bytes())
    assert not errors, f"{path}: " + "; ".join(errors)


def test_each_familys_decoder_is_the_part_the_shared_decoder_names():
    """face_decoder.dart includes the family's part under the name packages give it; each family's part says
    which decoder kind it decodes (the kind model_meta.json names) and defines familyDetect."""
    from mobilekit.flutter.package import FAMILY_DART_FILE

    shared = (PROJECT_ROOT / "mobilekit" / DART_DECODER / "face_decoder.dart").read_text()
    assert f"part '{FAMILY_DART_FILE}';" in shared
    for family in FAMILIES.values():
        text = (PROJECT_ROOT / "mobilekit" / family.dart_decoder).read_text()
        assert "part of 'face_decoder.dart';" in text and f"const familyKind = '{family.name}';" in text
        assert "List<Face> familyDetect(Map<String, Float32List> outputs, List<Anchor>? anchors, DecoderSettings s)" in text


def test_the_numpy_mirror_reads_every_decoder_setting_the_dart_reads():
    """Each ``meta['decoder'][KEY]`` the Dart decoder reads changes the NumPy mirror's settings (or, when
    required, its absence is a one-line error naming it): the mirror cannot ignore a setting the app uses."""
    import re

    from mobilekit.detections import DecoderSettings
    from mobilekit.errors import MobilekitError

    dart = (PROJECT_ROOT / "mobilekit" / DART_DECODER / "face_decoder.dart").read_text()
    read_by_dart = set(re.findall(r"meta\['decoder'\]\['(\w+)'\]", dart))
    assert {"kind", "variances", "score_clipping", "score_threshold", "nms_iou", "nms_offset", "pre_nms_top_k", "max_detections"} <= read_by_dart
    decoder = {"kind": "blazeface", "variances": [0.1, 0.2], "score_clipping": 100.0, "score_threshold": 0.5, "nms_iou": 0.3,
               "nms_offset": 0.0, "pre_nms_top_k": 5000, "max_detections": 100}  # fmt: skip
    meta = {"decoder": decoder, "input": {"shape": [1, 128, 128, 3]}}
    base = DecoderSettings.from_meta(meta)
    for key in sorted(read_by_dart):
        changed = {**decoder, key: "retinaface" if key == "kind" else [0.5, 0.5] if key == "variances" else 7}
        assert DecoderSettings.from_meta({**meta, "decoder": changed}) != base, key
        without = {k: v for k, v in decoder.items() if k != key}
        try:
            assert DecoderSettings.from_meta({**meta, "decoder": without}) != base, key
        except MobilekitError as exc:
            assert key in str(exc)
