"""The registry holds every check to the contract (`curation.checks.Check`), as cleanlab's
registry refuses what is not an IssueManager."""

import inspect

import pytest

from curation.checks import REGISTRY, CheckResult, register
from curation.errors import InvalidValue
from curation.checks._contract import Check


class Fine:
    name = "always_fine"
    title = "Always fine"
    description = "Finds nothing; for the registry's tests."

    def run(self, table, progress=None, ignore_pairs=frozenset()):
        return CheckResult(self.name, [], {})


@pytest.fixture
def registry_restored():
    saved = dict(REGISTRY)
    yield
    REGISTRY.clear()
    REGISTRY.update(saved)


def test_every_registered_check_takes_what_run_check_passes():
    expected = list(inspect.signature(Check.run).parameters)
    for name, check in REGISTRY.items():
        assert check.name == name
        assert list(inspect.signature(check.run).parameters) == expected[1:], name


def test_a_check_that_follows_the_contract_is_registered(registry_restored):
    check = register(Fine())
    assert REGISTRY["always_fine"] is check


@pytest.mark.parametrize("change, complaint", [
    ({"name": ""}, "non-empty name"),
    ({"name": "Has Spaces"}, "lower-case letters"),
    ({"description": None}, "non-empty description"),
    ({"run": None}, "no run method"),
    ({"run": lambda self, table: None}, "must accept progress and ignore_pairs"),
])
def test_a_check_that_breaks_the_contract_is_refused(registry_restored, change, complaint):
    broken = type("Broken", (Fine,), change)()
    with pytest.raises(InvalidValue, match=complaint):
        register(broken)
    assert broken not in REGISTRY.values()


def test_registering_a_taken_name_warns_and_replaces(registry_restored):
    first = register(Fine())
    with pytest.warns(UserWarning, match="already registered"):
        second = register(Fine())
    assert REGISTRY["always_fine"] is second is not first
