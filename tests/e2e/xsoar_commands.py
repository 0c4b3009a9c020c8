"""Polling commands of real Cortex XSOAR integrations, ported to a tether agent with the
smallest changes, served by the agents of ``test_xsoar.py`` (``--commands PATH:agent``).

Origins (public ``demisto/content`` repository, MIT licence), each function as it is there:

* ``run_automation_execution_command`` and its helpers: Packs/AWS_SystemManager/Integrations/
  AWSSystemManager/AWSSystemManager.py. One line changed: the decorator's
  ``interval=arg_to_number(demisto.args().get(...))`` (read when XSOAR runs the script for
  one command) becomes a function of the run's args (README, "Porting an XSOAR integration").
* ``crowdstrike_result_command`` and its helpers ``get_api_id``, ``has_error_state``:
  Packs/CrowdStrikeFalconSandbox/Integrations/CrowdStrikeFalconSandboxV2/CrowdStrikeFalconSandboxV2.py.
* ``cutting_for_batches`` and ``scheduled_commands_for_more_users``: Packs/Gmail/Integrations/
  Gmail/Gmail.py (``BATCH_DIVIDER`` is the integration's constant; 2 here).

What is not theirs: the fake clients (where they would call AWS, Falcon Sandbox or Google),
the registration on an ``Agent``, the ``gmail-search-all-mailboxes`` handler around the
Gmail functions, and ``record`` (the execution log the tests read).
"""

import copy
import functools
import os

from tether.agent import Agent
from tether.agent.xsoar import *  # the one import line that changed (was: demistomock, CommonServerPython)

agent = Agent()


def record(what: str, **fields: Any) -> None:
    with open(os.environ["TETHER_TEST_EXEC_LOG"], "a") as f:
        f.write(json.dumps({"what": what, "args": demisto.args(), **fields}) + "\n")


# -- AWS Systems Manager (ported) -------------------------------------------------------------

FINAL_STATUSES_AUTOMATION = {
    "Success": "The automation completed successfully.",
    "TimedOut": "A step or approval wasn't completed before the specified timeout period.",
    "Cancelled": "The automation was stopped by a requester before it completed.",
    "Failed": "The automation didn't complete successfully. This is a terminal state."
}


def format_document_version(document_version: str | None) -> str:
    if document_version == "latest":
        return "$LATEST"

    return document_version or "$DEFAULT"


def get_automation_execution_status(execution_id: str, ssm_client: "SSMClient",) -> str:
    response = ssm_client.get_automation_execution(AutomationExecutionId=execution_id)
    return response["AutomationExecution"]["AutomationExecutionStatus"]


@polling_function(
    name="aws-ssm-automation-execution-run",
    interval=lambda args: arg_to_number(args.get("interval_in_seconds", 30)),  # the ported line
    requires_polling_arg=False,  # means it will always be default to poll, poll=true,
)
def run_automation_execution_command(args: dict[str, Any], ssm_client: "SSMClient") -> PollResult:
    execution_id = args.get("execution_id")
    tag_key = args.get("tag_key")
    tag_value = args.get("tag_value")
    if not execution_id:  # if this is the first time the function is called
        if parameters := args.get("parameters"):
            try:
                parameters = json.loads(parameters)
            except Exception as e:
                raise DemistoException(
                    'The parameters argument is not in a valid JSON structure. For example: {"key": "value"}'
                ) from e

        kwargs = {
            "DocumentName": args["document_name"],
            "Mode": args.get("mode", "Auto"),
            **({"Tags": [{"Key": tag_key, "Value": tag_value}]} if tag_key and tag_value else {}),
            **{k: v for k, v in [
                ("Parameters", parameters),
                ("ClientToken", args.get("client_token")),
                ("MaxConcurrency", args.get("max_concurrency")),
                ("MaxErrors", args.get("max_error")),
            ] if v}
        }
        kwargs["DocumentVersion"] = format_document_version(args.get("document_version"))
        execution_id = ssm_client.start_automation_execution(**kwargs)["AutomationExecutionId"]
        args["execution_id"] = execution_id  # needed for the polling and is `hidden: true` in the yml file.
        return PollResult(
            partial_result=CommandResults(readable_output=f"Execution {args['execution_id']} is in progress"),
            response=None,
            continue_to_poll=True,
            args_for_next_run=args
        )
    status = get_automation_execution_status(execution_id, ssm_client)
    if status in FINAL_STATUSES_AUTOMATION:
        return PollResult(  # if execution not in progress, return the status and end the polling loop
            response=CommandResults(
                readable_output=FINAL_STATUSES_AUTOMATION[status]
            ),
            continue_to_poll=False,
        )
    return PollResult(
        partial_result=CommandResults(readable_output=f"Execution {execution_id} is in progress"),
        response=None,
        continue_to_poll=True,
        args_for_next_run=args
    )


class FakeSSM:
    """Where the integration would call AWS: an automation that succeeds on its third look."""

    def __init__(self) -> None:
        self.looks: dict[str, int] = {}

    def start_automation_execution(self, **kwargs: Any) -> dict[str, Any]:
        record("start_automation_execution", kwargs=kwargs)
        execution_id = f"exec-{len(self.looks) + 1}"
        self.looks[execution_id] = 0
        return {"AutomationExecutionId": execution_id}

    def get_automation_execution(self, AutomationExecutionId: str) -> dict[str, Any]:
        self.looks[AutomationExecutionId] += 1
        status = "Success" if self.looks[AutomationExecutionId] >= 2 else "InProgress"
        record("get_automation_execution", status=status, metadata=get_schedule_metadata())
        return {"AutomationExecution": {"AutomationExecutionStatus": status}}


# registered as XSOAR's main() calls it, with the client as a keyword (item: extra arguments)
agent.add_command("aws-ssm-automation-execution-run",
                  functools.partial(run_automation_execution_command, ssm_client=FakeSSM()))


# -- CrowdStrike Falcon Sandbox (ported) ------------------------------------------------------

def get_api_id(args: dict[str, Any]) -> str:
    # must fist check environmentId (deprecated) to override default args of environmentID
    if args.get('file') and (args.get('environmentId') or args.get('environmentID')):
        return f"{args['file']}:{args.get('environmentId') or args.get('environmentID')}"
    elif args.get('JobID'):
        return args['JobID']
    else:
        raise ValueError('Must supply JobID or environmentID and file')


def has_error_state(client: "Client", key: str) -> bool:
    state = client.get_state(key)
    demisto.debug(f'state to check if should poll response: {state}')
    if state['state'] == 'ERROR':
        raise Exception(f'Got Error state from server: {state}')
    return False


@polling_function('cs-falcon-sandbox-result')
def crowdstrike_result_command(args: dict[str, Any], client: "Client"):
    key = get_api_id(args)
    report_response = client.get_report(key, args['file-type'])
    demisto.debug(f'get report response code: {report_response.status_code}')
    successful_response = report_response.status_code == 200

    if successful_response:
        ret_list = [fileResult(get_default_file_name(args['file-type']), report_response.content,
                               file_type=EntryType.ENTRY_INFO_FILE)]
        if args.get('file'):
            ret_list.append(crowdstrike_scan_command(args, client))
        return PollResult(ret_list)

    else:
        error_response = CommandResults(raw_response=report_response,
                                        readable_output='Falcon Sandbox returned an error: status code '
                                                        + f'{report_response.status_code}, response: '
                                                        + f'{report_response.text}',
                                        entry_type=entryTypes['error'])

        return PollResult(continue_to_poll=lambda: not has_error_state(client, key), response=error_response)


class FakeResponse:
    def __init__(self, status_code: int, text: str) -> None:
        self.status_code = status_code
        self.text = text


class FakeFalcon:
    """Where the integration would call Falcon Sandbox: the report is not there yet (404);
    the analysis of a job whose id starts with "bad" is in an ERROR state."""

    def get_report(self, key: str, filetype: str) -> FakeResponse:
        record("get_report", key=key)
        return FakeResponse(404, "report not found")

    def get_state(self, key: str) -> dict[str, str]:
        record("get_state", key=key)
        return {"state": "ERROR" if key.startswith("bad") else "IN_PROGRESS"}


FALCON = FakeFalcon()
# a closure, as an integration's main() might call it
agent.add_command("cs-falcon-sandbox-result", lambda args: crowdstrike_result_command(args, FALCON))


# -- Gmail (ported) ---------------------------------------------------------------------------

BATCH_DIVIDER = 2


def cutting_for_batches(list_accounts: list) -> List[list]:

    accounts: list = []
    rest_accounts: list = []

    batch_size = int(len(list_accounts) / BATCH_DIVIDER)
    if rest := len(list_accounts) % BATCH_DIVIDER:
        rest_accounts = list_accounts[-rest:]
        list_accounts = list_accounts[:-rest]

    accounts.extend(batch(list_accounts, batch_size))

    # When the number of accounts is not exactly divisible by BATCH_DIVIDER,
    # We add the remaining accounts to the first batch to avoid running another polling command.
    if rest_accounts:
        accounts[0].extend(rest_accounts)

    return accounts


def scheduled_commands_for_more_users(accounts: list, next_page_token: str) -> List[CommandResults]:

    accounts_batches = cutting_for_batches(accounts)

    command_results: list[CommandResults] = []
    args = copy.deepcopy(demisto.args())
    for batch in accounts_batches:

        args.update({'list_accounts': batch})
        command_results.append(
            CommandResults(
                readable_output='Searching mailboxes, please wait...',
                scheduled_command=ScheduledCommand(
                    command='gmail-search-all-mailboxes',
                    next_run_in_seconds=10,
                    args=copy.deepcopy(args),
                    timeout_in_seconds=600
                )
            )
        )
        args.pop('list_accounts', None)
    if next_page_token:
        command_results.append(
            CommandResults(
                outputs_key_field='PageToken',
                outputs={'PageToken': {'NextPageToken': next_page_token}}
            )
        )

    return command_results


@agent.command("gmail-search-all-mailboxes")
def search_all_mailboxes(args: dict[str, Any]) -> Any:
    """Not Gmail's: the first run lists the (fake) accounts and schedules one run per batch
    with Gmail's functions; a batch's run searches its accounts and is done."""
    if accounts := args.get("list_accounts"):
        record("search_batch", accounts=accounts)
        return CommandResults(readable_output=f"searched {', '.join(accounts)}",
                              outputs={"Gmail": {"searched": accounts}})
    return scheduled_commands_for_more_users(["a@x", "b@x", "c@x", "d@x", "e@x"], "page-2")


# -- XSOAR idioms, written for these tests ----------------------------------------------------

@agent.command("job-submit")
def job_submit(args: dict[str, Any]) -> CommandResults:
    """HelloWorld's job submit, in its style: a CommandResults carrying the schedule."""
    return CommandResults(
        readable_output=f"Submitted job {args['job']}; polling",
        outputs_prefix="Job", outputs={"id": args["job"], "status": "pending"},
        scheduled_command=ScheduledCommand(
            command="job-poll", next_run_in_seconds=0, args={"job": args["job"], "polling": "true"},
            timeout_in_seconds=0, items_remaining=3),
    )


@agent.command("job-poll")
@polling_function("job-poll", interval=lambda args: float(args.get("interval", 1)))
def job_poll(args: dict[str, Any], *extra: Any, **kwargs: Any) -> PollResult:
    metadata = get_schedule_metadata()
    record("job_poll", metadata=metadata)
    runs = metadata.get("times_ran", 1)
    return PollResult(CommandResults(readable_output=f"job {args['job']} done after {runs} runs"),
                      continue_to_poll=lambda: runs < 3)


@agent.command("fails-with-return-error")
def fails(args: dict[str, Any]) -> None:
    try:
        return_error("the device refused the command", error="permission denied")
    except Exception:  # an integration's broad except does not swallow it, as SystemExit in XSOAR
        pass
