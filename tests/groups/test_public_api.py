"""The public names of logd.groups, pinned so that a change to them is deliberate."""

import logd.groups


def test_all_is_pinned_and_importable():
    """__all__ lists exactly the supported names, and each of them exists."""
    assert sorted(logd.groups.__all__) == sorted([
        "OFFSETS_TOPIC", "CoordinatorNotAvailableError", "FencedMemberError", "GroupCoordinator",
        "GroupDescription", "GroupError", "GroupMetadataManager", "GroupNotEmptyError", "GroupNotFoundError",
        "HeartbeatResult", "InvalidGroupRequestError", "MemberDescription", "MemoryOffsetsLog",
        "OffsetAndMetadata", "OffsetsLog", "PartitionOffsets", "PartitionOffsetsLog", "PipelinedOffsetsLog",
        "TopicPartition", "UnknownMemberError", "assign",
    ])
    for name in logd.groups.__all__:
        assert getattr(logd.groups, name) is not None
    assert issubclass(logd.groups.UnknownMemberError, logd.groups.FencedMemberError)
