"""Which lane a priority goes to (cloudworker/sqs/priority_lanes.py)."""

from __future__ import annotations

from cloudworker.sqs.priority_lanes import PriorityLanes, is_lane


def test_a_queue_declared_with_priorities_has_lanes_and_higher_numbers_go_higher() -> None:
    lanes = PriorityLanes()
    lanes.declare("tasks", {"x-max-priority": 10})
    assert lanes.lanes("tasks") == ["tasks-p9", "tasks-p6", "tasks-p3"]
    got = {p: lanes.lane_of("tasks", p) for p in (None, 0, 2, 3, 5, 6, 8, 9, 255)}
    assert got == {
        None: "tasks",
        0: "tasks",
        2: "tasks",
        3: "tasks-p3",
        5: "tasks-p3",
        6: "tasks-p6",
        8: "tasks-p6",
        9: "tasks-p9",
        255: "tasks-p9",
    }


def test_a_lower_highest_priority_caps_the_lanes() -> None:
    lanes = PriorityLanes()
    lanes.declare("low", {"x-max-priority": 5})
    assert lanes.lanes("low") == ["low-p3"]
    assert lanes.lane_of("low", 9) == "low-p3"


def test_no_lanes_without_priorities_for_a_fifo_queue_or_for_a_lane_itself() -> None:
    lanes = PriorityLanes()
    lanes.declare("plain", None)
    lanes.declare("orders.fifo", {"x-max-priority": 10})
    lanes.declare("tasks-p9", {"x-max-priority": 10})
    lanes.declare("odd", {"x-max-priority": True})
    for queue in ("plain", "orders.fifo", "tasks-p9", "odd"):
        assert lanes.lanes(queue) == [] and lanes.lane_of(queue, 9) == queue
    assert is_lane("tasks-p9") and not is_lane("tasks-p7") and not is_lane("tasks")
