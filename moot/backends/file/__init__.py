"""``file:///path/to/dir``: processes on one host coordinate through a directory.

No server: the directory is the engine. It is created (mode 0700) if missing,
and refused if other users could tamper with it; ``?mode=0660`` shares it
with its group on purpose (:mod:`moot.backends.file.access`).
The layout on disk and why it is so: ``docs/design/file.md`` (format 3; a
directory in use by a moot of an older format is refused, and an older moot
refuses a format 3 directory).

Guarantees
    * A process that dies, even by SIGKILL, loses its ephemeral keys (locks,
      memberships) at once: they live by the flock on its session's file,
      which the kernel drops, and watchers of those keys are woken by the
      close of that file, not by polling. One session keeps one descriptor,
      however many locks it holds or waits on.
    * ``seq`` (and every key's version) comes from a counter per directory that
      is written on every use, so it keeps increasing across restarts of every
      process. It is not fsync'ed, so a machine crash may lose the last
      increments; each new value is therefore also at least the clock in
      microseconds, which keeps seqs growing across a crash as long as the
      clock is not stepped back by more than the crash and reboot took.
    * Several backend objects in one process behave like separate processes
      (each opens its own files, and flocks belong to open files), and a
      child made by ``fork()`` drops its copies of its parent's files at once,
      so it never keeps its parent's keys alive.
    * The fork rule: a child never unlocks anything (it shares its parent's
      open files, so an unlock would free the parent's locks); it only closes
      its copies, and its inherited backend objects refuse every further call.
    * Readers never see a half-written value: every write holds the
      directory's mutex exclusively, every read holds it shared.
    * Session TTLs are recorded but liveness is the owner process itself: a
      live process whose heartbeat stalled keeps its keys until it dies or is
      evicted with :meth:`FileBackend.expire_session`; an evicted session
      cannot make new ephemeral keys.
"""

from moot.backends.file.backend import FileBackend

__all__ = ["FileBackend"]
