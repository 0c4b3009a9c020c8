"""The enrollment rules (``tether.protocol.enrollment.decide``): proof, possible clones, tags."""

from __future__ import annotations

import pytest

from tether.protocol import ErrorCode, ProtocolError
from tether.protocol.enrollment import Decision, Proof, decide


def refused(**kwargs: object) -> ProtocolError:
    with pytest.raises(ProtocolError) as caught:
        decide(**{"key_tags": [], "allow_requested": False, "asked": [], "proof": None, "twin": None,
                  **kwargs})  # type: ignore[arg-type]
    return caught.value


def test_a_new_agent_gets_its_keys_tags_and_those_asked_for_only_if_the_key_allows() -> None:
    assert decide(key_tags=["kiosk"], allow_requested=False, asked=[], proof=None, twin=None) == \
        Decision(None, ["kiosk"], None)
    assert decide(key_tags=["kiosk"], allow_requested=False, asked=["kiosk"], proof=None, twin=None).tags == \
        ["kiosk"]
    assert decide(key_tags=["kiosk"], allow_requested=True, asked=["web", "db"], proof=None, twin=None).tags == \
        ["db", "kiosk", "web"]
    error = refused(key_tags=["kiosk"], asked=["prod", "finance"])
    assert error.code is ErrorCode.ENROLL_TAGS_REFUSED
    assert error.message == (
        "this enrollment key gives the tags kiosk and allows no others; finance, prod refused (enroll without "
        "them and have an operator add them, tetherctl tag add, or use a key made with --allow-requested-tags)")
    assert "gives the tags (none)" in refused(asked=["web"]).message


def test_tags_beyond_what_an_agent_may_carry_are_refused() -> None:
    error = refused(key_tags=[f"k{i}" for i in range(40)], allow_requested=True, asked=[f"a{i}" for i in range(30)])
    assert error.code is ErrorCode.ENROLL_TAGS_REFUSED and "70 tags; an agent carries at most 64" in error.message


def test_a_known_machine_uuid_without_proof_is_a_new_agent_marked_a_possible_clone() -> None:
    assert decide(key_tags=[], allow_requested=False, asked=[], proof=None, twin="a1") == Decision(None, [], "a1")


def test_proof_re_enrolls_the_same_agent_with_its_tags_unchanged() -> None:
    proof = Proof("a1", ok=True, tags=["web", "db"])
    assert decide(key_tags=["kiosk"], allow_requested=True, asked=["web"], proof=proof, twin=None) == \
        Decision("a1", ["db", "web"])
    error = refused(key_tags=["kiosk"], allow_requested=True, asked=["web", "prod"], proof=proof)
    assert error.code is ErrorCode.ENROLL_TAGS_REFUSED
    assert error.message == ("re-enrolling agent a1 keeps its tags (db, web); prod refused: tags change only "
                             "through operators (tetherctl tag add a1 TAG)")


def test_a_failed_proof_is_refused_never_made_another_agent() -> None:
    error = refused(proof=Proof("a1", ok=False), twin="a1")
    assert error.code is ErrorCode.UNAUTHORIZED
    assert error.message == ("agent a1's token was not accepted (revoked, removed, or not this tetherd's): "
                             "re-enrolling as an agent takes its current token")


def test_proof_from_a_machine_whose_uuid_changed_makes_a_new_agent_replacing_the_old() -> None:
    """Armadito "Enrollment": a changed machine UUID (re-imaged, cloned with its state) gets
    a new id; the old agent is kept, marked replaced by it. The successor keeps the tags the
    proved agent had (it held that agent's token), and may ask for no others."""
    proof = Proof("a1", ok=True, tags=["web"], machine_uuid="m-old")
    assert decide(key_tags=["kiosk"], allow_requested=False, asked=[], proof=proof, twin=None,
                  machine_uuid="m-new") == Decision(None, ["web"], replaces="a1")
    assert decide(key_tags=[], allow_requested=False, asked=["web"], proof=proof, twin=None,
                  machine_uuid="m-old") == Decision("a1", ["web"])
    # An agent enrolled without a machine UUID, or an enrollee that gives none: the same agent.
    assert decide(key_tags=[], allow_requested=False, asked=[], proof=Proof("a1", ok=True, tags=[]), twin=None,
                  machine_uuid="m-new").agent_id == "a1"
    assert decide(key_tags=[], allow_requested=False, asked=[], proof=proof, twin=None).agent_id == "a1"
    error = refused(asked=["prod"], proof=proof, machine_uuid="m-new")
    assert error.code is ErrorCode.ENROLL_TAGS_REFUSED and "keeps its tags (web); prod refused" in error.message
