"""``tether.agent.xsoar`` against Cortex XSOAR's documented behaviour. The reference is
``Packs/Base/Scripts/CommonServerPython/CommonServerPython.py`` in ``demisto/content``; each
test names the function it follows."""

from __future__ import annotations

import functools
from typing import Any

import pytest

from tether.agent.outcome import interpret
from tether.agent.sdk import CURRENT_RUN, Context, ErrorResult
from tether.agent.xsoar import (
    CommandResults,
    DemistoException,
    EntryType,
    PollResult,
    ScheduledCommand,
    arg_to_number,
    argToBoolean,
    argToList,
    assign_params,
    batch,
    demisto,
    dict_safe_get,
    entryTypes,
    get_schedule_metadata,
    polling_function,
    remove_empty_elements,
    return_error,
    string_to_table_header,
    tableToMarkdown,
)
from tether.protocol import Schedule, unpack


def in_run(args: dict[str, Any], command: str = "cmd", run: int = 1, **kw: Any) -> Any:
    """Set the run under way as the runner does (a context variable); returns the reset token."""
    return CURRENT_RUN.set(Context(delivery_id=1, task_id=1, command=command, run=run, args=args, **kw))


@pytest.fixture(autouse=True)
def no_run_left_over() -> Any:
    token = CURRENT_RUN.set(None)
    yield
    CURRENT_RUN.reset(token)


def test_arg_to_boolean() -> None:
    """CommonServerPython ``argToBoolean``: bools as they are, 'true'/'yes' and 'false'/'no' in
    any case; anything else raises ValueError."""
    assert [argToBoolean(v) for v in (True, False, "true", "TRUE", "Yes", "false", "NO")] == [
        True, False, True, True, True, False, False]
    for bad in ("1", "", "y", 1, None, 1.0):
        with pytest.raises(ValueError):
            argToBoolean(bad)


def test_arg_to_number() -> None:
    """CommonServerPython ``arg_to_number``: None/'' -> None (ValueError if required),
    digits -> int, a float's text truncated, ints as they are, anything else ValueError."""
    assert [arg_to_number(v) for v in (None, "", "30", "2.7", 5, True)] == [None, None, 30, 2, 5, True]
    with pytest.raises(ValueError, match='Missing "interval"'):
        arg_to_number(None, "interval", required=True)
    with pytest.raises(ValueError, match="Missing required argument"):
        arg_to_number("", required=True)
    with pytest.raises(ValueError, match='Invalid number: "n"="x"'):
        arg_to_number("x", "n")
    with pytest.raises(ValueError, match='"x" is not a valid number'):
        arg_to_number("x")
    with pytest.raises(ValueError, match=r'"2\.5" is not a valid number'):
        arg_to_number(2.5)  # a float (not its text) is refused, as in XSOAR


def test_arg_to_list_and_batch() -> None:
    """CommonServerPython ``argToList`` and ``batch``."""
    assert argToList("a, b ,c") == ["a", "b", "c"]
    assert argToList('["a", 1]') == ["a", 1]
    assert argToList(["x"]) == ["x"] and argToList(None) == [] and argToList(7) == [7]
    assert argToList("1,2", transform=int) == [1, 2]
    assert argToList("[oops") == ["[oops"]
    assert list(batch([1, 2, 3, 4, 5], 2)) == [[1, 2], [3, 4], [5]]


def test_helpers_polling_commands_build_entries_with() -> None:
    """CommonServerPython ``dict_safe_get``, ``assign_params``, ``remove_empty_elements``,
    ``string_to_table_header`` and ``tableToMarkdown`` (the table laid out as XSOAR's)."""
    data = {"response": {"status": {"label": "FOUND"}, "items": [1, 2]}}
    assert dict_safe_get(data, ["response", "status", "label"]) == "FOUND"
    assert dict_safe_get(data, ["response", "items", 5], "none") == "none"
    assert dict_safe_get(data, ["response", "items"], return_type=list) == [1, 2]
    with pytest.raises(TypeError, match="Return Type Error"):
        dict_safe_get(data, ["response"], return_type=list)
    assert dict_safe_get(data, ["response"], "d", return_type=list, raise_return_type=False) == "d"
    assert assign_params(a=1, b=None, c="", d=[], e=0, keys_to_ignore=["e"]) == {"a": 1}
    assert remove_empty_elements({"a": None, "b": {"c": []}, "d": [None, {}, 1], "e": 0}) == {"d": [1], "e": 0}
    assert string_to_table_header("total_uploaded") == "Total Uploaded"
    with pytest.raises(Exception, match="The key is not a string"):
        string_to_table_header(3)  # type: ignore[arg-type]
    assert tableToMarkdown("Completed", {"Total Uploaded": 3, "Total Errors": None}) == (
        "### Completed\n|Total Errors|Total Uploaded|\n|---|---|\n|  | 3 |\n")
    table = tableToMarkdown("Jobs", [{"job_id": 1, "tags": ["a", "b"], "x": None}, {"job_id": "2|3", "info": {"k": 1}}],
                            headers=["job_id", "tags", "info", "x"], headerTransform=string_to_table_header,
                            removeNull=True, metadata="two jobs")
    assert table == ("### Jobs\ntwo jobs\n|Job Id|Tags|Info|\n|---|---|---|\n| 1 | a, b |  |\n"
                     '| 2\\|3 |  | {"k": 1} |\n')
    assert tableToMarkdown("Empty", []) == "### Empty\n**No entries.**\n"
    assert tableToMarkdown("", ["x"], headers="") .startswith("|")


def test_entry_types_and_demisto_exception() -> None:
    """CommonServerPython ``EntryType``, ``entryTypes``, ``DemistoException``."""
    assert EntryType.ERROR == entryTypes["error"] == 4 and EntryType.NOTE == entryTypes["note"] == 1
    exc = DemistoException("bad request", res={"status": 400})
    assert str(exc) == "bad request" and exc.res == {"status": 400} and exc.exception is None


def test_command_results_to_context() -> None:
    """CommonServerPython ``CommandResults.__init__`` and ``to_context``: outputs under their
    prefix (with a key-field condition), raw_response defaults to outputs."""
    entry = CommandResults(outputs_prefix="Job", outputs_key_field="id", outputs={"id": 7},
                           readable_output="job 7").to_context()
    assert entry == {"Type": 1, "ContentsFormat": "json", "Contents": {"id": 7}, "HumanReadable": "job 7",
                     "EntryContext": {"Job(val.id && val.id == obj.id)": {"id": 7}}}
    assert CommandResults(readable_output="x", raw_response="text").to_context()["ContentsFormat"] == "text"
    assert CommandResults(outputs={"a": 1}).to_context()["EntryContext"] == {"a": 1}
    assert CommandResults(outputs_prefix="A.B", outputs=3, replace_existing=True).to_context()[
        "EntryContext"] == {"A(true)": {"B": 3}}
    with pytest.raises(ValueError, match="outputs_prefix is missing"):
        CommandResults(outputs=[1])
    with pytest.raises(DemistoException, match="nested path"):
        CommandResults(outputs_prefix="A", outputs=3, replace_existing=True).to_context()


def test_scheduled_command_as_in_xsoar() -> None:
    """CommonServerPython ``ScheduledCommand``: ``raise_error_if_not_supported`` and
    ``supports_polling`` are static; ``items_remaining`` is taken; an interval below 10 s
    (0 and negatives too) is raised -- here by tetherd, to its floor --; a timeout of 0 is
    "not given"."""
    assert ScheduledCommand.raise_error_if_not_supported() is True and ScheduledCommand.supports_polling() is True
    scheduled = ScheduledCommand("poll", -5, {"id": 1}, 0, 4)
    assert interpret(scheduled, {}).schedule == Schedule(
        command="poll", next_run_in_seconds=-5.0, args={"id": 1}, items_remaining=4)


def test_polling_function_forwards_extra_arguments_and_asks_continue_to_poll_with_none() -> None:
    """CommonServerPython ``polling_function``: ``inner(args, *arguments, **kwargs)`` calls
    ``func(args, *arguments, **kwargs)``; ``continue_to_poll()`` is called without arguments;
    ``poll_args = args_for_next_run or args`` gets ``hide_polling_output``."""
    seen: list[Any] = []

    @polling_function("sandbox-scan", interval=20, timeout=300)
    def scan(args: dict[str, Any], client: Any, *, tag: str = "") -> PollResult:
        seen.append((client, tag))
        return PollResult(CommandResults(readable_output="done"), continue_to_poll=lambda: client == "busy",
                          partial_result=CommandResults(readable_output="still scanning"))

    scheduled = scan({"file": "f", "polling": True}, "busy", tag="t")
    assert isinstance(scheduled, ScheduledCommand)
    assert (scheduled.command, scheduled.next_run_in_seconds, scheduled.timeout_in_seconds) == ("sandbox-scan", 20, 300)
    assert scheduled.args == {"file": "f", "polling": True, "hide_polling_output": True}
    assert unpack(interpret(scheduled, {}).output)["HumanReadable"] == "still scanning"
    done = functools.partial(scan, client="idle")({"polling": True})
    assert isinstance(done, CommandResults) and done.readable_output == "done"
    closure = (lambda args: scan(args, "idle"))({"polling": "no"})  # not polling: the response
    assert isinstance(closure, CommandResults)
    assert seen == [("busy", "t"), ("idle", ""), ("idle", "")]


def test_a_one_argument_predicate_still_gets_the_response() -> None:
    """tether's own form (kept): a predicate that takes a parameter is called with the response."""
    assert PollResult({"state": "running"}, continue_to_poll=lambda r: r["state"] != "done").should_poll()
    assert not PollResult({"state": "done"}, continue_to_poll=lambda r: r["state"] != "done").should_poll()
    assert PollResult(None, continue_to_poll=lambda *a: True).should_poll()


def test_interval_and_timeout_may_be_functions_of_the_run_args() -> None:
    """XSOAR integrations build the decorator from ``demisto.args()`` (one script run per
    command); tether takes a function of the run's args instead."""

    @polling_function("poll", interval=lambda args: arg_to_number(args.get("interval_in_seconds", 30)),
                      timeout=lambda args: arg_to_number(args.get("timeout")), requires_polling_arg=False)
    def poll(args: dict[str, Any]) -> PollResult:
        return PollResult(None, continue_to_poll=True)

    scheduled = poll({"interval_in_seconds": "45", "timeout": "900"})
    assert (scheduled.next_run_in_seconds, scheduled.timeout_in_seconds) == (45, 900)
    defaulted = poll({})
    assert (defaulted.next_run_in_seconds, defaulted.timeout_in_seconds) == (30, None)

    @polling_function("poll", interval=lambda args: arg_to_number(args["missing"]), requires_polling_arg=False)
    def broken(args: dict[str, Any]) -> PollResult:
        return PollResult(None, continue_to_poll=True)

    with pytest.raises(ValueError, match="the interval function failed: KeyError"):
        broken({})


def test_demisto_answers_for_the_run_under_way() -> None:
    """``demisto.args()``, ``getArg``, ``command()`` of the run; outside a run, a clear error
    that says how to port the decorator's ``demisto.args()``."""
    with pytest.raises(DemistoException, match="interval=lambda args: arg_to_number"):
        demisto.args()
    token = in_run({"id": "7"}, command="job-poll")
    try:
        assert demisto.args() == {"id": "7"} and demisto.getArg("id") == "7" and demisto.command() == "job-poll"
        assert demisto.params() == {} and get_schedule_metadata() == {}  # run 1: nobody scheduled it
        demisto.info("hello")
        demisto.debug("hello")
        demisto.error("hello")
        with pytest.raises(DemistoException, match="return the results"):
            demisto.results({})
    finally:
        CURRENT_RUN.reset(token)
    assert demisto.callingContext == {}


def test_get_schedule_metadata() -> None:
    """CommonServerPython ``get_schedule_metadata(context)``: from ``ParentEntry``:
    is_polling, polling_command, polling_args, times_ran (+1), start_date, end_date."""
    context = {"ParentEntry": {"polling": True, "pollingCommand": "poll", "pollingArgs": {"id": 1},
                               "timesRan": 2, "startDate": "2024-01-01T00:00:00Z", "endingDate": ""}}
    assert get_schedule_metadata(context) == {"is_polling": True, "polling_command": "poll",
                                              "polling_args": {"id": 1}, "times_ran": 3,
                                              "start_date": "2024-01-01T00:00:00Z"}
    assert get_schedule_metadata({}) == {}
    token = in_run({"id": 1}, command="poll", run=3, poll_started_at=1_700_000_000.0, poll_deadline=1_700_000_600.0)
    try:
        assert get_schedule_metadata() == {
            "is_polling": True, "polling_command": "poll", "polling_args": {"id": 1}, "times_ran": 3,
            "start_date": "2023-11-14T22:13:20Z", "end_date": "2023-11-14T22:23:20Z"}
        assert get_schedule_metadata(demisto.callingContext)["times_ran"] == 3
    finally:
        CURRENT_RUN.reset(token)


def test_return_error_ends_the_run_with_its_message() -> None:
    """CommonServerPython ``return_error``: an error entry, then ``sys.exit(0)``: not caught by
    ``except Exception``."""
    with pytest.raises(ErrorResult) as caught:
        try:
            return_error("the device refused", error=ValueError("denied"))
        except Exception:  # pragma: no cover -- must not catch it
            pytest.fail("return_error was caught by except Exception")
    assert caught.value.message == "the device refused"


# -- what a returned value means (return_results) --------------------------------------------


def test_error_entries_fail_the_run() -> None:
    """``CommandResults(entry_type=EntryType.ERROR)`` and an ``entryTypes['error']`` entry dict
    (what ``return_error`` writes in XSOAR) are errors: the run fails with their text."""
    outcome = interpret(CommandResults(readable_output="it broke", entry_type=EntryType.ERROR), {})
    assert (outcome.ok, outcome.error) == (False, "it broke")
    outcome = interpret({"Type": entryTypes["error"], "ContentsFormat": "text", "Contents": "no access"}, {})
    assert (outcome.ok, outcome.error) == (False, "no access")
    outcome = interpret([CommandResults(readable_output="fine"), {"Type": 4, "Contents": {"code": 7}}], {})
    assert (outcome.ok, outcome.error) == (False, '{"code":7}')


def test_a_command_results_with_a_schedule_is_a_schedule_result() -> None:
    scheduled = CommandResults(readable_output="waiting", scheduled_command=ScheduledCommand("poll", 30, {"id": 1}))
    outcome = interpret(scheduled, {"id": 0})
    assert outcome.ok and outcome.schedule == Schedule(command="poll", next_run_in_seconds=30.0, args={"id": 1})
    assert unpack(outcome.output)["HumanReadable"] == "waiting"
    listed = interpret([CommandResults(readable_output="note"), scheduled], {})
    assert listed.schedule is not None and [e["HumanReadable"] for e in unpack(listed.output)] == ["note", "waiting"]


def test_several_schedules_in_a_list_are_several_sequences() -> None:
    one = CommandResults(readable_output="batch 1", scheduled_command=ScheduledCommand("search", 10, {"b": 1}))
    two = CommandResults(readable_output="batch 2", scheduled_command=ScheduledCommand("search", 10, {"b": 2}))
    token = CommandResults(outputs={"PageToken": 2})
    outcome = interpret([one, two, token], {})
    assert outcome.schedule is not None and outcome.schedule.args == {"b": 1}
    assert [e["HumanReadable"] for e in unpack(outcome.output)] == ["batch 1", None]
    ((partial, schedule),) = outcome.more
    assert unpack(partial)["HumanReadable"] == "batch 2" and schedule.args == {"b": 2}


def test_a_schedule_where_it_cannot_be_honoured_is_an_error_not_data() -> None:
    for value in ({"next": ScheduledCommand("poll", 30)}, [[ScheduledCommand("poll", 30)]],
                  {"r": CommandResults(readable_output="x")}):
        outcome = interpret(value, {})
        assert not outcome.ok and "where it cannot be honoured" in outcome.error
