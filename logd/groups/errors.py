"""Domain errors of the group coordinator.

The server maps each to a gRPC status and a ``logd-error`` code (see
``logd.server.groups.GROUP_ERRORS``); nothing here knows about gRPC::

    GroupError
    ├── FencedMemberError           FAILED_PRECONDITION  FENCED_MEMBER
    │   └── UnknownMemberError      NOT_FOUND            UNKNOWN_MEMBER
    ├── GroupNotEmptyError          FAILED_PRECONDITION  GROUP_NOT_EMPTY
    ├── GroupNotFoundError          NOT_FOUND            GROUP_NOT_FOUND
    ├── InvalidGroupRequestError    INVALID_ARGUMENT     INVALID_REQUEST
    └── CoordinatorNotAvailableError UNAVAILABLE         STORAGE_ERROR

``UnknownMemberError`` is a ``FencedMemberError`` because both mean the same thing to a
caller holding partitions: its claims are no longer valid, it must drop its partitions
and join again. Look errors up by walking ``type(exc).__mro__`` so the subclass wins.
"""

from __future__ import annotations


class GroupError(Exception):
    """Base class of the coordinator's domain errors; the message is for a person."""


class FencedMemberError(GroupError):
    """The member's epoch is stale, or it does not own a partition it commits for."""


class UnknownMemberError(FencedMemberError):
    """The member id is not in the group: it was evicted, left, or never joined."""


class GroupNotEmptyError(GroupError):
    """The operation needs a group without members (reset offsets, delete group)."""


class GroupNotFoundError(GroupError):
    """The group does not exist (no members, no committed offsets)."""


class InvalidGroupRequestError(GroupError):
    """A malformed request: empty group id, negative partition, bad epoch, ..."""


class UnknownTopicError(GroupError):
    """An offset reset names a topic that does not exist."""


class UnknownPartitionError(GroupError):
    """An offset reset names a partition its topic does not have."""


class CoordinatorNotAvailableError(GroupError):
    """A write to ``__consumer_offsets`` failed earlier; the coordinator refuses
    requests until the broker restarts and replays the log (sticky failure)."""


class CoordinatorLoadingError(GroupError):
    """A request arrived before the coordinator was ready (the broker is starting)."""
