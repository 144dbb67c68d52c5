import json

from producers.bodies import read_bodies


def test_json_lines_keep_their_bytes(tmp_path):
    lines = [b'{"id": "a",  "event": "ping"}', b'{"id":"b","event":"ping"}']
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n\n")
    assert read_bodies(path) == lines


def test_one_pretty_printed_document_is_one_body(tmp_path):
    document = {"id": "a", "event": "ping", "data": {}}
    path = tmp_path / "event.json"
    path.write_text(json.dumps(document, indent=2))
    [body] = read_bodies(path)
    assert json.loads(body) == document


def test_an_array_is_one_body_per_element(tmp_path):
    documents = [{"id": str(i), "event": "ping"} for i in range(3)]
    path = tmp_path / "export.json"
    path.write_text(json.dumps(documents))
    assert [json.loads(b) for b in read_bodies(path)] == documents


def test_lines_that_are_not_json_are_still_sent(tmp_path):
    path = tmp_path / "doc-samples.jsonl"
    path.write_text('{"id": "a",}\n{"id": "b"}\n')
    assert read_bodies(path) == [b'{"id": "a",}', b'{"id": "b"}']
