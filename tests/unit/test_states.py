import itertools

from shared.run import states


def test_deployed_is_terminal_only_in_the_last_environment():
    assert not states.is_terminal("deployed:test", "prod")
    assert states.is_terminal("deployed:prod", "prod")
    assert states.is_terminal("deployment_failed:test", "prod")
    assert states.is_terminal("rejected")
    assert not states.is_terminal("awaiting_approval:prod", "prod")


def test_the_happy_path_is_allowed_and_shortcuts_are_not():
    path = ["received", "validating", "accepted", "uploading", "training", "trained", "evaluating", "evaluated",
            "deploying:dev", "deployed:dev", "deploying:test", "deployed:test", "awaiting_approval:prod",
            "deploying:prod", "deployed:prod"]
    for current, target in itertools.pairwise(path):
        assert states.can_transition(current, target), (current, target)
    assert not states.can_transition("validating", "training")
    assert not states.can_transition("trained", "deploying:dev")
    assert not states.can_transition("received", "deployed:prod")


def test_an_environment_state_only_moves_within_its_environment():
    # a late duplicate of dev's deployment must not drag a run that is already deploying prod backwards
    assert not states.can_transition("deploying:prod", "deployed:test")
    assert not states.can_transition("deploying:test", "deployment_failed:dev")
    assert not states.can_transition("awaiting_approval:prod", "deploying:test")
    assert states.can_transition("deployed:test", "deploying:prod")
