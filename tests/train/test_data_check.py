"""`llmlab data check`: exact counts on a file with known faults; lengths equal training's; file types."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from train_helpers import FACTS, base_config, write_config, write_jsonl

from llmlab.cli import main
from llmlab.data.check import check_datasets, scan_file, summary_lines
from llmlab.train.data import encode_datasets
from llmlab.train.modeling import load_tokenizer
from llmlab.train.schema import DatasetSpec, validate_train_config

LONG_ANSWER = " ".join(["the quick brown fox jumps over the lazy dog"] * 12)  # well over 64 tokens


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """The CLI in this process (a subprocess would spend seconds importing transformers again)."""
    code = main(list(args))
    return code, capsys.readouterr().out


@pytest.fixture(scope="module")
def tokenizer(tiny_llama_dir: Path):
    return load_tokenizer(tiny_llama_dir)


def faulty_records() -> list[dict[str, str]]:
    """8 facts; then 2 exact copies, 1 copy differing in case and punctuation, 2 empty answers, 3 too long."""
    records = [{"instruction": q, "output": a} for q, a in FACTS]
    records += [records[0], records[0]]
    records.append({"instruction": FACTS[1][0].upper(), "output": FACTS[1][1].rstrip(".") + " !"})
    records += [
        {"instruction": "Say nothing.", "output": ""},
        {"instruction": "Stay quiet.", "output": "  \n"},
    ]
    records += [{"instruction": f"Tell story {i}.", "output": LONG_ANSWER} for i in range(3)]
    return records


def test_known_faults_are_counted_exactly_and_strict_fails(
    tiny_llama_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", faulty_records())
    # Two evaluation examples are training examples; one is new.
    held_out = [{"instruction": q, "output": a} for q, a in FACTS[2:4]]
    evaluation = write_jsonl(tmp_path / "eval.jsonl", [*held_out, {"instruction": "New?", "output": "Yes."}])
    config = base_config(tiny_llama_dir, train, tmp_path / "out", sequence_len=64)
    config["eval_datasets"] = [{"path": str(evaluation), "format": "instruction"}]
    path = write_config(tmp_path / "train.yaml", config)

    code, out = run_cli(capsys, "data", "check", str(path), "--json")
    assert code == 0  # nothing here stops training without --strict
    report = json.loads(out)
    assert report["schema"] == "llmlab.data.check/1"
    train_file = report["datasets"][0]
    assert (train_file["rows"], train_file["duplicates"], train_file["normalised_duplicates"]) == (16, 2, 3)
    assert (train_file["empty"], train_file["too_long"], train_file["format_errors"]) == (2, 3, 0)
    assert train_file["tokens"]["max"] > 64 >= train_file["tokens"]["p50"]
    assert report["leaked"] == 2 and report["datasets"][1]["role"] == "eval"
    assert report["split"] == {
        "train": 13,
        "eval": 3,
        "eval_split": 0,
        "eval_datasets": 3,
        "dropped_too_long": 3,
        "truncated": 0,
    }
    assert report["problems"] == {"format_errors": 0, "duplicates": 2, "empty": 2, "leaked": 2}
    preflight = "\n".join(summary_lines(report))  # what `llmlab train` prints before training
    assert "13 train / 3 eval examples" in preflight and "found 2 duplicates, 2 empty, 2 leaked" in preflight
    assert "3 longer than sequence_len=64 (dropped, too_long: drop)" in preflight

    code, out = run_cli(capsys, "data", "check", str(path), "--strict")
    assert code == 1 and "leaked: 2 evaluation examples also in training" in out

    clean = write_jsonl(tmp_path / "clean.jsonl", [{"instruction": q, "output": a} for q, a in FACTS])
    clean_config = write_config(tmp_path / "clean.yaml", base_config(tiny_llama_dir, clean, tmp_path / "o2"))
    assert run_cli(capsys, "data", "check", str(clean_config), "--strict")[0] == 0


def test_format_errors_are_listed_by_file_and_line(
    tiny_llama_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "bad.jsonl"
    data.write_text(
        '{"instruction": "Q?", "output": "A."}\n{not json\n\n["a list"]\n{"instruction": "Q2?"}\n',
        encoding="utf-8",
    )
    path = write_config(tmp_path / "c.yaml", base_config(tiny_llama_dir, data, tmp_path / "out"))
    code, out = run_cli(capsys, "data", "check", str(path), "--json")
    assert code == 1
    errors = json.loads(out)["datasets"][0]["errors"]
    assert [e.split(": ")[0] for e in errors] == [f"{data}:2", f"{data}:4", f"{data}:5"]
    assert "not valid JSON" in errors[0] and "needs a string 'output'" in errors[2]


@pytest.mark.parametrize("fmt", ["text", "instruction", "chat"])
def test_lengths_are_those_training_encodes(tokenizer, fmt: str, tmp_path: Path) -> None:
    records = {
        "text": [{"text": f"{q} {a}"} for q, a in FACTS] + [{"text": ""}],
        "instruction": [{"instruction": q, "input": "in" * i, "output": a} for i, (q, a) in enumerate(FACTS)],
        "chat": [
            {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
            for q, a in FACTS
        ],
    }[fmt]
    spec = DatasetSpec(path=write_jsonl(tmp_path / "d.jsonl", records), format=fmt)
    encoded = encode_datasets(tokenizer, [spec], sequence_len=4096)
    assert scan_file(tokenizer, spec, "train").lengths == [len(e["input_ids"]) for e in encoded.examples]


def test_too_long_truncate_keeps_rows_with_an_answer_left(tokenizer, tiny_llama_dir: Path, tmp_path: Path):
    records = [{"instruction": q, "output": a} for q, a in FACTS[:4]]
    records.append({"instruction": "Tell a story.", "output": LONG_ANSWER})  # prompt fits, answer is cut
    records.append({"instruction": LONG_ANSWER, "output": "Yes."})  # the prompt alone is too long
    spec = DatasetSpec(path=write_jsonl(tmp_path / "d.jsonl", records), format="instruction")
    encoded = encode_datasets(tokenizer, [spec], sequence_len=64, too_long="truncate")
    assert (encoded.truncated, encoded.dropped_too_long, len(encoded.examples)) == (1, 1, 5)
    assert max(len(e["input_ids"]) for e in encoded.examples) == 64
    config = base_config(tiny_llama_dir, spec.path, tmp_path / "out", sequence_len=64, too_long="truncate")
    split = check_datasets(validate_train_config(config, "test"), tokenizer)["split"]
    assert (split["truncated"], split["dropped_too_long"], split["train"]) == (1, 1, 5)
    # Training applies too_long to eval_datasets as well, and counts both (metrics.json's `examples`).
    from llmlab.train.run import prepare_data

    config["eval_datasets"] = [{"path": str(spec.path), "format": "instruction"}]
    data = prepare_data(validate_train_config(config, "test"), tokenizer)
    assert (data.truncated, data.dropped, data.n_train, len(data.eval_examples)) == (2, 2, 5, 5)


def test_csv_parquet_and_json_files_train_and_check_alike(tokenizer, tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    import pyarrow
    import pyarrow.csv
    import pyarrow.parquet

    table = pyarrow.table({"instruction": [q for q, _ in FACTS], "output": [a for _, a in FACTS]})
    pyarrow.parquet.write_table(table, tmp_path / "d.parquet")
    pyarrow.csv.write_csv(table, tmp_path / "d.csv")
    (tmp_path / "d.json").write_text(json.dumps(table.to_pylist()), encoding="utf-8")
    reference = encode_datasets(
        tokenizer,
        [DatasetSpec(path=write_jsonl(tmp_path / "d.jsonl", table.to_pylist()), format="instruction")],
        512,
    ).examples
    for suffix in ("parquet", "csv", "json"):
        spec = DatasetSpec(path=tmp_path / f"d.{suffix}", format="instruction")
        assert encode_datasets(tokenizer, [spec], 512).examples == reference, suffix
        assert scan_file(tokenizer, spec, "train").lengths == [len(e["input_ids"]) for e in reference]


class _Stop(Exception):
    pass


@pytest.mark.parametrize("rank", ["0", "1"])
def test_train_prints_the_summary_first_on_the_main_rank_only(
    tiny_llama_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    rank: str,
) -> None:
    from llmlab.train import run

    def stop(*_args: object) -> None:
        raise _Stop  # the summary is printed before the data is prepared; nothing after matters here

    monkeypatch.setenv("RANK", rank)
    monkeypatch.setattr(run, "prepare_data", stop)
    train = write_jsonl(tmp_path / "train.jsonl", faulty_records())
    config = base_config(tiny_llama_dir, train, tmp_path / "out", sequence_len=64)
    with pytest.raises(_Stop):
        run.train(validate_train_config(config, "test"))
    out = capsys.readouterr().out
    printed = [line for line in out.splitlines() if line.startswith("llmlab train: data: ")]
    if rank == "0":
        assert len(printed) == 3 and "16 rows in 1 file(s)" in printed[0], printed
        assert "found 2 duplicates, 2 empty" in printed[2]
    else:
        assert printed == []
