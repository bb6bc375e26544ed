"""moot: distributed locks, group membership and leader election over the
coordination engine you already run, chosen by one URL.

    import moot
    with moot.connect("file:///var/lib/myapp/coord", member_id="conductor-1") as coord:
        with coord.lock("volume-42", timeout=10) as held:
            write_with(held.token)
"""

from moot.config import from_config
from moot.coordinator import Coordinator, connect, default_url
from moot.errors import (
    AuthenticationFailed,
    BackendError,
    ConfigurationError,
    ConnectionLost,
    CoordinatorClosed,
    DriverNotInstalled,
    GroupError,
    GroupNotEmpty,
    GroupNotFound,
    InvalidArgument,
    InvalidName,
    InvalidURL,
    LockError,
    LockTimeout,
    MemberAlreadyJoined,
    MemberNotFound,
    MootError,
    NoLiveMember,
    PermissionDenied,
    SemaphoreLimitMismatch,
    SessionExpired,
    TLSFailed,
    UnknownBackend,
    UpgradeConflict,
)
from moot.recipes.election import Election
from moot.recipes.group import Group, GroupWatch, Member
from moot.recipes.hold import Held
from moot.recipes.lock import Lock, LockInfo
from moot.recipes.partitioner import Partitioner
from moot.recipes.queue import Waiter
from moot.recipes.rwlock import RWLock
from moot.recipes.semaphore import Semaphore, SemaphoreInfo
from moot.recipes.servicegroup import ServiceGroup
from moot.synchronized import get_default, set_default, synchronized
from moot.values import RawValue

__version__ = "0.1.0"

__all__ = [
    "AuthenticationFailed",
    "BackendError",
    "ConfigurationError",
    "ConnectionLost",
    "Coordinator",
    "CoordinatorClosed",
    "DriverNotInstalled",
    "Election",
    "Group",
    "GroupError",
    "GroupNotEmpty",
    "GroupNotFound",
    "GroupWatch",
    "Held",
    "InvalidArgument",
    "InvalidName",
    "InvalidURL",
    "Lock",
    "LockError",
    "LockInfo",
    "LockTimeout",
    "Member",
    "MemberAlreadyJoined",
    "MemberNotFound",
    "MootError",
    "NoLiveMember",
    "Partitioner",
    "PermissionDenied",
    "RWLock",
    "RawValue",
    "Semaphore",
    "SemaphoreInfo",
    "SemaphoreLimitMismatch",
    "ServiceGroup",
    "SessionExpired",
    "TLSFailed",
    "UnknownBackend",
    "UpgradeConflict",
    "Waiter",
    "connect",
    "default_url",
    "from_config",
    "get_default",
    "set_default",
    "synchronized",
]
