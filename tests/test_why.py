"""`twopay why`: every decision about a settlement or a person, with its trace
(spec 8), checked against figures computed by hand from the fixture rules.

The workspace is built by two real `twopay run` batches on the files in
tests/fixtures/reports (see workspace.py there for what each row is).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result

from fixtures.reports.workspace import build_workspace
from helpers import cli

M001 = "110105198001010016"  # 张伟: paid in January, capped in February


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_workspace(tmp_path_factory.mktemp("why"))


def why(ws: Path, *args: str) -> Result:
    return cli("why", "-w", ws, *args)


def trace(ws: Path, key: str, *args: str) -> dict[str, Any]:
    result = why(ws, key, "--json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def settlement(t: dict[str, Any], sid: str) -> dict[str, Any]:
    return next(s for s in t["settlements"] if s["settlement_id"] == sid)


def only_line(s: dict[str, Any]) -> dict[str, Any]:
    assert len(s["lines"]) == 1, s["lines"]
    return s["lines"][0]  # type: ignore[no-any-return]


def run_month(
    ws: Path,
    tmp_path: Path,
    period: str,
    roster_rows: list[tuple[object, ...]],
    settlement_rows: list[tuple[object, ...]],
) -> None:
    """One `twopay run` of ``period`` on a roster and settlements written from
    rows (the helpers' headers); it must commit."""
    from helpers import ROSTER_HEADER, SETTLEMENT_HEADER, write_csv

    roster = write_csv(tmp_path / f"r-{period}.csv", ROSTER_HEADER, roster_rows)
    s = write_csv(tmp_path / f"s-{period}.csv", SETTLEMENT_HEADER, settlement_rows)
    done = cli("run", "-w", ws, "--period", period, "--settlements", s, "--roster", roster)
    assert done.exit_code == 0, done.output


def test_a_capped_member_by_id_number(ws: Path) -> None:
    t = trace(ws, M001)
    assert t["matched_by"] == "id_number"
    assert [s["settlement_id"] for s in t["settlements"]] == ["JAN-001", "JAN-012", "FEB-001"]
    assert t["person"] == "110105********0016"

    jan = only_line(settlement(t, "JAN-001"))
    assert jan["period"] == "2024-01" and jan["rule_version"] == "2024"
    assert (jan["base_amount"], jan["base_ytd_before"], jan["base_ytd_after"]) == (
        "1500.00",
        "0.00",
        "1500.00",
    )
    rule = jan["rule"]
    assert (rule["deductible"], rule["deductible_scope"]) == ("1000.00", "year")
    assert (rule["deductible_left_before"], rule["deductible_left_after"]) == ("1000.00", "0.00")
    assert jan["deductible_applied"] == "1000.00"
    # 0.5 x (1500 - 1000)
    assert rule["segments"] == [
        {"from": "0.00", "to": None, "ratio": "0.5", "amount": "500.00", "pays": "250.00"}
    ]
    assert (jan["computed"], jan["payout"], jan["status"]) == ("250.00", "250.00", "paid")
    assert (jan["paid_type_before"], jan["paid_type_after"]) == ("0.00", "250.00")
    assert (jan["paid_total_before"], jan["paid_total_after"]) == ("0.00", "250.00")
    assert jan["payment_id"] == "2024-01-M001"

    feb = only_line(settlement(t, "FEB-001"))
    # the deductible is used up: 0.5 x 2000 = 1000, but the outpatient cap of
    # 1000 leaves 1000 - 250 = 750
    assert feb["rule"]["deductible_left_before"] == "0.00"
    assert feb["deductible_applied"] == "0.00"
    assert (feb["base_ytd_before"], feb["base_ytd_after"]) == ("1500.00", "3500.00")
    assert feb["computed"] == "1000.00"
    assert feb["rule"]["type_annual_cap"] == "1000.00"
    assert feb["rule"]["scheme_annual_cap"] == "3000.00"
    assert (feb["paid_type_before"], feb["paid_type_after"]) == ("250.00", "1000.00")
    assert (feb["paid_total_before"], feb["paid_total_after"]) == ("250.00", "1000.00")
    assert (feb["ratio_part"], feb["payout"], feb["note"]) == ("750.00", "750.00", "cap_reached")

    quarantined = settlement(t, "JAN-012")
    assert [(d["outcome"], d["code"]) for d in quarantined["decisions"]] == [
        ("quarantined", "bad_amount")
    ]
    assert quarantined["lines"] == []

    (year,) = t["year_to_date"]
    (outpatient,) = year["by_visit_type"]
    assert (outpatient["paid"], outpatient["cap"], outpatient["cap_left"]) == (
        "1000.00",
        "1000.00",
        "0.00",
    )
    assert (year["paid_total"], year["scheme_cap_left"]) == ("1000.00", "2000.00")
    assert [m["member_id"] for m in t["members"]] == ["M001"]


def test_identity_and_eligibility_are_shown(ws: Path) -> None:
    decision = settlement(trace(ws, "JAN-001"), "JAN-001")["decisions"][0]
    assert (decision["outcome"], decision["match"]) == ("adjudicated", "exact")
    assert decision["identity"], "the identity stage's evidence is part of the trace"
    elig = decision["eligibility"]
    assert elig["member_id"] == "M001" and elig["unit_code"] == "U01"
    assert elig["valid_from"] == "2020-01-01" and elig["valid_to"] is None
    assert elig["membership_valid_on_service_date"] is True
    assert elig["dues_paid_through"] == "2024-12-31"
    assert elig["dues_paid_on_service_date"] is True
    (scheme,) = elig["schemes"]
    assert (scheme["scheme"], scheme["version"], scheme["result"]) == ("fx-plan", "2024", "passed")
    assert (scheme["waiting_days"], scheme["cover_starts"]) == (30, "2020-01-31")


@pytest.mark.parametrize(
    "key",
    [
        M001,
        "110105800101001",  # the legacy 15-digit form
        "１１０１０５１９８００１０１００１６",  # full-width digits
        f" {M001[:6]} {M001[6:]} ",  # spaces
        "M001",  # member_id
    ],
)
def test_every_form_of_the_key_finds_the_person(ws: Path, key: str) -> None:
    t = trace(ws, key)
    assert t["person"] == "110105********0016"
    assert {s["settlement_id"] for s in t["settlements"]} == {"JAN-001", "JAN-012", "FEB-001"}


def test_a_lower_case_x_finds_the_member(ws: Path) -> None:
    t = trace(ws, "11010519800101018x")
    assert t["matched_by"] == "id_number"
    assert [m["member_id"] for m in t["members"]] == ["M012"]
    assert t["settlements"] == []


def test_a_zero_paid_member_by_member_id(ws: Path) -> None:
    t = trace(ws, "M002")
    assert t["matched_by"] == "member_id"
    line = only_line(settlement(t, "JAN-002"))
    assert (line["status"], line["payout"], line["computed"]) == ("zero", "0.00", "0.00")
    assert line["note"] == "below_deductible"
    assert line["deductible_applied"] == "800.00"
    assert (line["rule"]["deductible_left_before"], line["rule"]["deductible_left_after"]) == (
        "1000.00",
        "200.00",
    )
    assert line["rule"]["segments"] == []
    assert line["payment_id"] is None


def test_a_rejection_names_its_code_reason_and_values(ws: Path) -> None:
    s = settlement(trace(ws, "JAN-004"), "JAN-004")
    (decision,) = s["decisions"]
    assert (decision["outcome"], decision["code"]) == ("rejected", "name_mismatch")
    assert decision["reason"] == "姓名与会员名册不符"
    assert decision["detail"]
    assert s["lines"] == []
    assert s["name"] == "@SUM(1)"  # JSON is not a spreadsheet: the text as given

    inactive = settlement(trace(ws, "JAN-006", "--lang", "en"), "JAN-006")["decisions"][0]
    assert inactive["code"] == "membership_inactive"
    assert inactive["reason"] == "no membership in force on the service date"
    assert "2023-12-31" in inactive["detail"]  # the record's valid_to decided it

    dues = settlement(trace(ws, "JAN-007"), "JAN-007")["decisions"][0]
    assert dues["code"] == "unit_dues_unpaid" and "2023-12-31" in dues["detail"]
    assert dues["eligibility"]["dues_paid_on_service_date"] is False

    waiting = settlement(trace(ws, "JAN-008"), "JAN-008")["decisions"][0]
    assert waiting["code"] == "waiting_period"
    (scheme,) = waiting["eligibility"]["schemes"]
    assert (scheme["result"], scheme["cover_starts"]) == ("waiting_period", "2024-02-09")


def test_a_held_row_and_its_candidate(ws: Path) -> None:
    s = settlement(trace(ws, "JAN-005"), "JAN-005")
    (decision,) = s["decisions"]
    assert (decision["outcome"], decision["code"]) == ("held", "probable_id_typo")
    assert decision["candidate_member_id"] == "M006"
    assert s["id_number"] == "110105********0607"
    # the candidate's own trace shows the row held in their name
    assert "JAN-005" in {x["settlement_id"] for x in trace(ws, "M006")["settlements"]}

    typo = settlement(trace(ws, "JAN-009"), "JAN-009")["decisions"][0]
    assert (typo["outcome"], typo["code"]) == ("held", "probable_name_typo")


def test_an_inpatient_line_shows_tier_segments_and_the_allowance(ws: Path) -> None:
    line = only_line(settlement(trace(ws, "FEB-002"), "FEB-002"))
    # 3000 - 500 = 2500 above the deductible: 2000 x 0.5 + 500 x 0.8 = 1400
    assert line["rule"]["segments"] == [
        {"from": "0.00", "to": "2000.00", "ratio": "0.5", "amount": "2000.00", "pays": "1000.00"},
        {"from": "2000.00", "to": None, "ratio": "0.8", "amount": "500.00", "pays": "400.00"},
    ]
    assert line["computed"] == "1400.00"
    # admitted 2024-02-01, discharged 2024-02-06: 5 days x 20
    assert (line["days_before"], line["allowance_days"], line["days_after"]) == (0, 5, 5)
    assert (line["rule"]["allowance_per_day"], line["allowance"]) == ("20.00", "100.00")
    assert (line["paid_total_before"], line["paid_total_after"]) == ("0.00", "1500.00")
    assert line["payout"] == "1500.00"


def test_a_reversal_shows_the_clawback_and_the_recovery(ws: Path) -> None:
    t = trace(ws, "JAN-003")
    assert [s["settlement_id"] for s in t["settlements"]] == ["JAN-003", "FEB-003"]
    assert only_line(settlement(t, "JAN-003"))["payout"] == "100.00"
    claw = only_line(settlement(t, "FEB-003"))
    assert (claw["kind"], claw["status"], claw["payout"]) == ("clawback", "clawback", "-100.00")
    assert (claw["paid_total_before"], claw["paid_total_after"]) == ("100.00", "0.00")
    assert [(r["kind"], r["amount"]) for r in t["recoveries"]] == [("owed", "100.00")]
    # asked from the reversal's side, the same story
    assert [s["settlement_id"] for s in trace(ws, "FEB-003")["settlements"]] == [
        "JAN-003",
        "FEB-003",
    ]
    # the human view says which plan year the accumulators are
    human = why(ws, "FEB-003", "--lang", "en").stdout
    assert "plan year" in human and "2024" in human


def test_a_shared_name_lists_the_people_to_choose_from(ws: Path) -> None:
    t = trace(ws, "张伟")
    assert t["several"] is True
    got = sorted((c["id_number"], tuple(c["member_ids"])) for c in t["candidates"])
    assert got == [("110105********0016", ("M001",)), ("110105********0112", ("M011",))]
    human = why(ws, "张伟")
    assert human.exit_code == 0
    assert "M001" in human.stdout and "M011" in human.stdout
    # a name only one person has goes straight to their trace
    assert trace(ws, "刘洋")["person"] == "110105********0059"
    # in Traditional characters too, as identity matches them
    assert trace(ws, "劉洋")["person"] == "110105********0059"
    assert trace(ws, "張偉")["several"] is True


def test_a_name_found_only_on_settlements_finds_them(ws: Path) -> None:
    """A name on a settlement whose ID belongs to a roster member of another
    name (a name typo held for review, a name_mismatch) is a key too: its
    decisions are about that ID."""
    held = trace(ws, "吴杰")  # JAN-009: M010 周杰's ID under the name 吴杰
    assert [s["settlement_id"] for s in held["settlements"]] == ["JAN-009"]
    assert held["settlements"][0]["decisions"][0]["code"] == "probable_name_typo"
    mismatch = trace(ws, "@SUM(1)")  # JAN-004: M004's ID under another name
    assert [s["settlement_id"] for s in mismatch["settlements"]] == ["JAN-004"]
    assert mismatch["settlements"][0]["decisions"][0]["code"] == "name_mismatch"


def test_an_unknown_key_is_one_sentence_and_exit_2(ws: Path) -> None:
    result = why(ws, "no-such-thing")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1
    assert "no-such-thing" in result.stderr
    empty = why(ws, "   ")
    assert empty.exit_code == 2


def test_without_a_ledger_it_says_so(tmp_path: Path) -> None:
    assert cli("init", tmp_path / "empty").exit_code == 0
    (tmp_path / "empty" / "twopay.duckdb").unlink()
    result = why(tmp_path / "empty", "X1")
    assert result.exit_code == 2 and "run a batch first" in result.stderr


def test_the_terminal_rendering(ws: Path) -> None:
    result = why(ws, M001, "--lang", "en")
    assert result.exit_code == 0, result.output
    out = result.stdout
    for expected in (
        "JAN-001",
        "FEB-001",
        "deductible left before",
        "paid (visit type) after",
        "0.00–∞ × 0.5: 2000.00 → 1000.00",
        "750.00",
        "a cap was reached",
        "bad_amount",
    ):
        assert expected in out, expected
    assert M001 not in out and "110105********0016" in out
    zh = why(ws, "JAN-004")
    assert "姓名与会员名册不符" in zh.stdout and "@SUM(1)" in zh.stdout


def test_unmask_shows_the_full_numbers(ws: Path) -> None:
    t = trace(ws, "M001", "--unmask")
    assert t["person"] == M001
    assert t["members"][0]["card_no"] == "6222000000000001"
    assert settlement(t, "JAN-001")["id_number"] == M001
    assert M001 in why(ws, "M001", "--unmask").stdout


def test_the_installed_entry_point(ws: Path) -> None:
    exe = Path(sys.executable).with_name("twopay")
    done = subprocess.run(
        [str(exe), "why", "FEB-001", "-w", str(ws), "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    line = only_line(settlement(json.loads(done.stdout), "FEB-001"))
    assert line["payout"] == "750.00"
    missing = subprocess.run(
        [str(exe), "why", "nobody-at-all", "-w", str(ws)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert missing.returncode == 2
    assert "Traceback" not in missing.stderr and len(missing.stderr.strip().splitlines()) == 1


def test_tier_segments_add_up_to_the_computed_amount_before_rounding(tmp_path: Path) -> None:
    """Spec 4.1 rounds F(x1) - F(x0) once: a segment's share is shown exact
    (4999.995 and 0.006), so the segments add up to what the line computed
    (5000.00), where rounded shares (5000.00 + 0.01) would not."""
    from decimal import ROUND_HALF_UP, Decimal

    from twopay.reports.why import _segments
    from twopay.rules.loader import load_rule_file

    rule = tmp_path / "r.toml"
    rule.write_text(
        'scheme = "s"\ntitle = "t"\nversion = "1"\neffective_from = 2024-01-01\n'
        "[inpatient]\ndeductible = 1300\n"
        "tiers = [ { up_to = 10000, ratio = 0.5 }, { up_to = 50000, ratio = 0.6 }, { ratio = 0.7 } ]\n",
        encoding="utf-8",
    )
    line = {
        "visit_type": "inpatient",
        "kind": "normal",
        "base_amount": Decimal("10000.00"),
        "base_ytd_before": Decimal("1300.01"),
        "base_ytd_after": Decimal("11300.01"),
    }
    segments = _segments(line, load_rule_file(rule))
    assert [s["pays"] for s in segments] == ["4999.995", "0.006"]
    total = sum(Decimal(s["pays"]) for s in segments)
    assert total.quantize(Decimal("0.01"), ROUND_HALF_UP) == Decimal("5000.00")


def test_a_member_id_that_named_two_people_lists_them(tmp_path: Path) -> None:
    """A unit corrects a member's ID number in February's roster, as its
    notice asked: member_id M9 then named two people, and `why M9` said
    nothing in the ledger matched it (exit 2). It lists both, like a name
    two people share."""
    from helpers import SIMPLE_RULE, init_workspace, person_id

    ws = init_workspace(tmp_path / "ws", {"t.toml": SIMPLE_RULE})
    for month, pid in ((1, person_id(24)), (2, person_id(16))):
        run_month(
            ws,
            tmp_path,
            f"2024-0{month}",
            [("M9", "李明", pid, "C9", "U1", "在职", "2015-01-01", None)],
            [(f"S{month}", pid, "李明", "门诊", f"2024-0{month}-05", None, 3000, 3000, None)],
        )
    t = trace(ws, "M9")
    assert (t["several"], t["matched_by"]) == (True, "member_id")
    got = sorted((c["id_number"], tuple(c["member_ids"])) for c in t["candidates"])
    assert got == [
        (f"110105********{person_id(16)[-4:]}", ("M9",)),
        (f"110105********{person_id(24)[-4:]}", ("M9",)),
    ]
    human = why(ws, "M9", "--lang", "en")
    assert human.exit_code == 0 and "several people match" in human.stdout


def test_the_eligibility_shown_is_the_rule_file_the_batch_read(tmp_path: Path) -> None:
    """A claim rejected waiting_period under a 30-day wait; the analyst then
    edits the rule file (same version label) to 5 days. why showed the
    decision beside the file as it is now (waiting_days 5, cover from
    2024-04-06), contradicting it."""
    from helpers import init_workspace

    rule = (
        'scheme = "auto"\nversion = "1"\neffective_from = 2024-01-01\n'
        "waiting_days = 30\n[outpatient]\nratio = 0.5\n"
    )
    ws = init_workspace(tmp_path / "ws", {"auto.toml": rule})
    run_month(
        ws,
        tmp_path,
        "2024-04",
        [("M1", "张一", M001, "C1", "U1", "在职", "2024-04-01", None)],
        [("S1", M001, "张一", "门诊", "2024-04-25", None, "100", "100", None)],
    )

    def scheme_shown() -> dict[str, Any]:
        (decision,) = settlement(trace(ws, "S1"), "S1")["decisions"]
        assert decision["code"] == "waiting_period"
        (shown,) = decision["eligibility"]["schemes"]
        return shown  # type: ignore[no-any-return]

    assert scheme_shown()["waiting_days"] == 30
    assert scheme_shown()["cover_starts"] == "2024-05-01"
    (ws / "rules" / "auto.toml").write_text(rule.replace("30", "5"), encoding="utf-8")
    # the ledger keeps the file's hash, not its text: what the batch read is
    # no longer known, so nothing is shown rather than the file of today
    shown = scheme_shown()
    assert "waiting_days" not in shown and "cover_starts" not in shown


def test_a_name_written_in_traditional_is_found_in_any_mix_of_forms(tmp_path: Path) -> None:
    """Spec 3: Traditional and Simplified compare as equal. The roster and
    the settlement write 張偉: why 張偉 found him, but 张伟 and 張伟 were
    'nothing in the ledger matches' (only the key was converted)."""
    from helpers import init_workspace

    ws = init_workspace(tmp_path / "ws")
    run_month(
        ws,
        tmp_path,
        "2024-03",
        [("M1", "張偉", M001, "C1", "U1", "在职", "2010-01-01", None)],
        [("S2", M001, "張偉", "门诊", "2024-03-02", None, "5000", "3000", None)],
    )
    for key in ("張偉", "张伟", "張伟", "张 伟"):
        t = trace(ws, key)
        assert t["matched_by"] == "name" and [s["settlement_id"] for s in t["settlements"]] == [
            "S2"
        ], key
    assert why(ws, "张卫").exit_code == 2  # a homophone is another name


def test_an_id_number_that_is_not_15_or_18_characters_finds_its_rows(tmp_path: Path) -> None:
    """A settlement's ID of 17 digits, or with a letter O for a zero, is
    rejected invalid_id_number; `why` with that ID said nothing in the ledger
    matched it, though rejections.csv listed the row."""
    from helpers import SIMPLE_RULE, init_workspace

    ws = init_workspace(tmp_path / "ws", {"t.toml": SIMPLE_RULE})
    # nobody on the roster is near: the rows are invalid_id_number, not held
    other = "110105199001010022"
    short, letter = other[:17], other[:10] + "O" + other[11:]
    run_month(
        ws,
        tmp_path,
        "2024-01",
        [("M1", "赵六", M001, "C1", "U1", "在职", "2015-01-01", None)],
        [
            ("S1", short, "王五", "门诊", "2024-01-05", None, 3000, 3000, None),
            ("S2", letter, "王五", "门诊", "2024-01-06", None, 3000, 3000, None),
        ],
    )
    for key, sid in ((short, "S1"), (letter, "S2")):
        t = trace(ws, key)
        assert t["matched_by"] == "id_number"
        (found,) = t["settlements"]
        assert found["settlement_id"] == sid
        assert [d["code"] for d in found["decisions"]] == ["invalid_id_number"]
    # a member_id or a name still comes first: only an unmatched key is tried as an ID
    assert trace(ws, "M1")["matched_by"] == "member_id"


def test_a_debt_and_its_offset_show_together_after_a_unit_corrects_the_id(
    tmp_path: Path,
) -> None:
    """M3 is on the roster under a one-digit typo of her ID; her claim is
    accepted by an override and then reversed once the unit has corrected the
    ID, and the debt is offset against her next payment under the corrected
    ID (the ledger follows the member_id). `why` showed the offset under one
    ID and the debt under the other, as if she still owed it."""
    from helpers import SIMPLE_RULE, init_workspace, person_id

    ws = init_workspace(tmp_path / "ws", {"t.toml": SIMPLE_RULE})
    right = person_id(3)
    typo = right[:14] + str((int(right[14]) + 1) % 10) + right[15:]

    def month(m: int, rows: list[tuple[object, ...]], pid: str) -> None:
        member = ("M3", "李娜", pid, "C3", "U2", "在职", "2020-01-01", None)
        run_month(ws, tmp_path, f"2024-0{m}", [member], rows)

    month(1, [("C1", right, "李娜", "门诊", "2024-01-10", None, 1800, 1500, None)], typo)
    (ws / "overrides.csv").write_text(
        "settlement_id,decision,member_id,note,decided_by\nC1,accept,M3,checked,me\n",
        encoding="utf-8",
    )
    month(2, [], typo)
    month(3, [("CR", right, "李娜", "门诊", "2024-03-01", None, -1800, -1500, "C1")], right)
    month(4, [("C4", right, "李娜", "门诊", "2024-04-01", None, 1800, 1500, None)], right)
    recoveries = cli("query", "-w", ws, "SELECT kind, amount FROM recoveries ORDER BY batch_id")
    assert "owed" in recoveries.output and "offset" in recoveries.output, recoveries.output
    for key in (right, typo, "CR"):
        got = sorted((r["kind"], r["amount"]) for r in trace(ws, key)["recoveries"])
        assert got == [("offset", "-250.00"), ("owed", "250.00")], key


def test_the_scheme_cap_left_is_the_latest_lines_version(tmp_path: Path) -> None:
    """Version H2 lowers the scheme cap from 3000 to 1000 on July 1st. An
    outpatient line in March (100 paid under H1), an inpatient one in August
    (200 under H2): why showed the cap of the outpatient line's version, 3000
    and 2700 left, where the next line is capped at 700."""
    from helpers import init_workspace

    half = 'scheme = "tx"\nversion = "{v}"\neffective_from = {start}\n{end}annual_cap = {cap}\n'
    body = "[outpatient]\nratio = 0.5\n[inpatient]\nratio = 0.5\n"
    ws = init_workspace(
        tmp_path / "ws",
        {
            "a.toml": half.format(
                v="H1", start="2024-01-01", end="effective_to = 2024-06-30\n", cap=3000
            )
            + body,
            "b.toml": half.format(v="H2", start="2024-07-01", end="", cap=1000) + body,
        },
    )
    run_month(
        ws,
        tmp_path,
        "2024-08",
        [("M1", "张三", M001, "C1", "U1", "在职", "2000-01-01", None)],
        [
            ("S1", M001, "张三", "门诊", "2024-03-01", None, 200, 200, None),
            ("S2", M001, "张三", "住院", "2024-08-01", "2024-07-30", 400, 400, None),
        ],
    )
    (year,) = trace(ws, "S2")["year_to_date"]
    assert (year["paid_total"], year["scheme_cap"], year["scheme_cap_left"]) == (
        "300.00",
        "1000.00",
        "700.00",
    )
