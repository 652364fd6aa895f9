from shared.stages.intake import drop_started_by, run_id_for
from shared.validation.splitting import bucket


def test_what_starts_a_run():
    assert drop_started_by("support.jsonl").name == "support"
    assert drop_started_by("team/run.json").folder == "team"
    assert drop_started_by("team/train.jsonl") is None        # data files inside a folder never start a run
    assert drop_started_by("notes.txt").name == "notes.txt"   # starts a run that will be rejected as not a dataset


def test_run_id_is_the_same_for_a_duplicate_event_and_new_for_a_reupload():
    drop = drop_started_by("support.jsonl")
    assert run_id_for(drop, '"0x1"') == run_id_for(drop, '"0x1"')
    assert run_id_for(drop, '"0x1"') != run_id_for(drop, '"0x2"')
    assert run_id_for(drop, '"0x1"').startswith("support-")


def test_split_keeps_identical_examples_together_and_is_seeded():
    line = b'{"messages": []}'
    assert bucket(line, 42, 0.1, 0.2) == bucket(line, 42, 0.1, 0.2)
    sides = {bucket(f'{{"i": {i}}}'.encode(), 42, 0.1, 0.2) for i in range(200)}
    assert sides == {"train", "validation", "eval"}
    share = sum(bucket(f'{{"i": {i}}}'.encode(), 7, 0.1, 0.2) == "eval" for i in range(2000)) / 2000
    assert 0.15 < share < 0.25
