"""Review decisions in overrides.csv (spec 2, 3 rule 5): a held row is decided
in the first later run after an override names it; an override for a row of
the batch itself wins over the identity rules. Real CLI, real files, on the
shipped sample data (sample_data/README.md explains each held row)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import duckdb
import pytest

from helpers import cli, init_workspace
from twopay.demo import sample_dir

DATA = sample_dir()
HEADER = "settlement_id,decision,member_id,note,decided_by\n"


def run(ws: Path, period: str) -> tuple[int, str]:
    done = cli(
        "run", "--workspace", ws, "--period", period,
        "--settlements", DATA / f"settlements_{period}.csv", "--roster", DATA / "roster.csv",
        "--units", DATA / "units.csv", "--enrollments", DATA / "enrollments.csv",
    )  # fmt: skip
    return done.exit_code, done.output


def rows(ws: Path, period: str, name: str) -> list[dict[str, str]]:
    with (ws / "reports" / period / f"{name}.csv").open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture()
def january(tmp_path: Path) -> Path:
    ws = init_workspace(tmp_path / "ws")
    code, out = run(ws, "2024-01")
    assert code == 0, out
    held = {r["settlement_id"]: r for r in rows(ws, "2024-01", "review")}
    assert held["JS240100104"]["candidate_member_id"] == "M00000263"
    return ws


def test_an_accepted_held_row_is_paid_in_the_next_run(january: Path) -> None:
    ws = january
    (ws / "overrides.csv").write_text(
        HEADER + "JS240100104,accept,M00000263,same person; card checked,王审核\n",
        encoding="utf-8",
    )
    code, out = run(ws, "2024-02")
    assert code == 0, out
    lines = [r for r in rows(ws, "2024-02", "payout_lines") if r["settlement_id"] == "JS240100104"]
    assert lines and all(r["match"] == "override" and r["member_id"] == "M00000263" for r in lines)
    assert "JS240100104" not in {r["settlement_id"] for r in rows(ws, "2024-02", "review")}
    con = duckdb.connect(str(ws / "twopay.duckdb"), read_only=True)
    try:
        decided = con.execute(
            "SELECT batch_id, row_batch_id, carried, outcome, member_id, identity FROM outcomes "
            "WHERE settlement_id = 'JS240100104' ORDER BY batch_id"
        ).fetchall()
    finally:
        con.close()
    # held in batch 1; decided in batch 2 as a carried row of batch 1
    assert [d[:5] for d in decided] == [
        (1, 1, False, "held", None),
        (2, 1, True, "adjudicated", "M00000263"),
    ]
    # the review decision is kept with what the identity rules had found
    evidence = json.loads(decided[1][5])
    assert {k: evidence[k] for k in ("rule", "outcome", "decision", "member_id", "decided_by")} == {
        "rule": "3.5",
        "outcome": "override",
        "decision": "accept",
        "member_id": "M00000263",
        "decided_by": "王审核",
    }
    assert evidence["note"] == "same person; card checked"
    assert evidence["was"]["outcome"] == "probable_id_typo"
    assert evidence["was"]["candidate_members"] == "M00000263"
    why = cli("why", "--workspace", ws, "JS240100104")
    assert why.exit_code == 0 and "王审核" in why.output and "Traceback" not in why.output
    summary = json.loads((ws / "reports" / "2024-02" / "summary.json").read_text())
    assert summary["balance"]["balanced"] is True
    assert summary["balance"]["rows_in"] == 188  # carried rows are not this batch's input


def test_a_rejected_held_row_leaves_the_review_with_a_reason(january: Path) -> None:
    ws = january
    (ws / "overrides.csv").write_text(HEADER + "JS240100104,reject,,not our member,李\n")
    code, out = run(ws, "2024-02")
    assert code == 0, out
    rejected = {r["settlement_id"]: r for r in rows(ws, "2024-02", "rejections")}
    assert "JS240100104" in rejected
    assert "review decision reject by 李: not our member" in rejected["JS240100104"]["detail"]
    assert "JS240100104" not in {r["settlement_id"] for r in rows(ws, "2024-02", "review")}
    assert "JS240100104" not in {r["settlement_id"] for r in rows(ws, "2024-02", "payout_lines")}


def test_an_override_for_a_row_of_the_batch_wins_over_the_identity_rules(tmp_path: Path) -> None:
    """JS240100104 would be held (spec 3 rule 4); accepted up front, it is paid at once."""
    ws = init_workspace(tmp_path / "ws")
    (ws / "overrides.csv").write_text(HEADER + "JS240100104,accept,M00000263,,\n")
    code, out = run(ws, "2024-01")
    assert code == 0, out
    paid = [r for r in rows(ws, "2024-01", "payout_lines") if r["settlement_id"] == "JS240100104"]
    assert paid and {r["match"] for r in paid} == {"override"}
    assert "JS240100104" not in {r["settlement_id"] for r in rows(ws, "2024-01", "review")}


def test_an_unusable_override_file_is_exit_2_naming_its_first_bad_line(january: Path) -> None:
    ws = january
    path = ws / "overrides.csv"
    path.write_text(
        HEADER
        + "JS240100104,accept,M99999999,,\n"  # line 2: not in the roster
        + "JS240200080,accept,M88888888,,\n"  # line 3: not in the roster either
    )
    code, out = run(ws, "2024-02")
    assert code == 2
    assert "overrides.csv: line 2:" in out and "M99999999" in out and "Traceback" not in out
    path.write_text(HEADER + "JS240100104,accept,M00000263,,\nJS240200080,maybe,,,\n")
    code, out = run(ws, "2024-02")
    assert code == 2
    assert "overrides.csv: line 3:" in out and "Traceback" not in out
    path.write_text(HEADER + "JS240100104,accept,,,\n")
    code, out = run(ws, "2024-02")
    assert code == 2
    assert "line 2: accept needs the member_id" in out and "None" not in out
    # the member's ID number where the member_id belongs: named, masked (spec 7)
    path.write_text(HEADER + "JS240100104,accept,110105199001010010,,\n")
    code, out = run(ws, "2024-02")
    assert code == 2
    assert "line 2: accept names member_id '110105********0010'" in out
    # nothing of February was committed by any refusal
    con = duckdb.connect(str(ws / "twopay.duckdb"), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM batches").fetchall() == [(1,)]
    finally:
        con.close()


def test_a_later_line_for_the_same_settlement_wins_and_the_earlier_is_not_checked(
    january: Path,
) -> None:
    """The last line for a settlement_id is the decision: an earlier line a
    reviewer corrected below it does not stop the run."""
    ws = january
    (ws / "overrides.csv").write_text(
        HEADER + "JS240100104,accept,M99999999,typo,\nJS240100104,accept,M00000263,fixed,\n",
        encoding="utf-8",
    )
    code, out = run(ws, "2024-02")
    assert code == 0, out
    lines = [r for r in rows(ws, "2024-02", "payout_lines") if r["settlement_id"] == "JS240100104"]
    assert lines and {r["member_id"] for r in lines} == {"M00000263"}


def test_an_accept_naming_the_persons_earlier_member_id_uses_the_record_of_the_day(
    tmp_path: Path,
) -> None:
    """Spec 5: identity uses the roster record valid on the service date.
    王一's card was re-issued under A2 in April; a reviewer accepts his held
    May claim naming A1, the member_id they know him by. Only A1's own
    records were looked at, so the claim was rejected membership_inactive
    although he was a member that day."""
    from helpers import ROSTER_HEADER, SETTLEMENT_HEADER, SIMPLE_RULE, person_id, write_csv

    ws = init_workspace(tmp_path / "ws", {"t.toml": SIMPLE_RULE})
    pid = person_id(1)
    roster = write_csv(
        tmp_path / "roster.csv",
        ROSTER_HEADER,
        [
            ("A1", "王一", pid, "CA1", "U1", "retired", "2020-01-01", "2024-04-05"),
            ("A2", "王一", pid, "CA2", "U1", "retired", "2024-04-06", None),
        ],
    )
    typo = pid[:-1] + ("1" if pid[-1] != "1" else "2")  # a wrong check character
    s1 = write_csv(
        tmp_path / "s1.csv",
        SETTLEMENT_HEADER,
        [("H01", typo, "王一", "门诊", "2024-05-10", None, "2100", "2000", None)],
    )
    s2 = write_csv(tmp_path / "s2.csv", SETTLEMENT_HEADER, [])

    def batch(period: str, settlements: Path) -> None:
        done = cli(
            "run", "-w", ws, "--period", period, "--settlements", settlements,
            "--roster", roster,
        )  # fmt: skip
        assert done.exit_code == 0, done.output

    batch("2024-05", s1)
    (held,) = rows(ws, "2024-05", "review")
    assert (held["settlement_id"], held["reason_code"]) == ("H01", "probable_id_typo")
    (ws / "overrides.csv").write_text(HEADER + "H01,accept,A1,same person,li\n", "utf-8")
    batch("2024-06", s2)
    assert rows(ws, "2024-06", "rejections") == []
    (line,) = rows(ws, "2024-06", "payout_lines")
    assert (line["settlement_id"], line["member_id"], line["payout"]) == ("H01", "A2", "500.00")
    assert line["match"] == "override"


def test_two_reversals_of_a_held_row_withdraw_it_once(january: Path, tmp_path: Path) -> None:
    """Spec 4.1 and 5: a held original is withdrawn from review by its
    reversal; two reversals of it in one batch still give the row one
    decision, by the first reversal in file order."""
    ws = january
    with (DATA / "settlements_2024-01.csv").open(encoding="gb18030", newline="") as fh:
        table = list(csv.reader(fh))
    header, held = table[0], next(r for r in table[1:] if r[0] == "JS240100104")
    money = [i for i, h in enumerate(header) if h in ("医疗费总额", "自付一", "自付二", "自费")]
    reversals = tmp_path / "reversals.csv"
    with reversals.open("w", encoding="utf-8", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(header)
        for sid in ("RV1", "RV2"):
            row = list(held)
            row[0], row[-1] = sid, "JS240100104"
            for i in money:
                row[i] = f"-{row[i]}" if row[i] not in ("", "0", "0.00") else row[i]
            out.writerow(row)
    done = cli(
        "run", "--workspace", ws, "--period", "2024-02", "--settlements", reversals,
        "--roster", DATA / "roster.csv", "--units", DATA / "units.csv",
        "--enrollments", DATA / "enrollments.csv",
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    rejected = [r for r in rows(ws, "2024-02", "rejections") if r["settlement_id"] == "JS240100104"]
    assert len(rejected) == 1 and "RV1" in rejected[0]["detail"], rejected
    summary = json.loads((ws / "reports" / "2024-02" / "summary.json").read_text())
    assert summary["carried_decisions"] == {"rejected": 1}
    assert summary["balance"]["balanced"] is True
    why = cli("why", "--workspace", ws, "--lang", "en", "JS240100104")
    assert why.exit_code == 0, why.output
    text = " ".join(why.output.replace("│", " ").split())  # the panel wraps at 80 columns
    assert "(withdrawn from review by its reversal)" in text
    assert "after review" not in text  # no reviewer decided it
