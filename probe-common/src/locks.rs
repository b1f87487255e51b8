//! `locks`: kernel lock contention (lock:contention_begin/end, or the mutex slow path by kprobe).

/// Hash map [`LockKey`] -> [`LockStats`].
pub const MAP_STATS: &str = "LOCKS_STATS";
pub const STATS_CAPACITY: u32 = 8192;

/// Flags of lock:contention_begin (include/trace/events/lock.h).
pub mod lock_flags {
    pub const SPIN: u32 = 1 << 0;
    pub const READ: u32 = 1 << 1;
    pub const WRITE: u32 = 1 << 2;
    pub const RT: u32 = 1 << 3;
    pub const PERCPU: u32 = 1 << 4;
    pub const MUTEX: u32 = 1 << 5;
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LockKey {
    pub lock_addr: u64,
    /// Kernel stack id in [`crate::MAP_STACKS`] (negative: not available).
    pub kstack_id: i32,
    pub flags: u32,
    pub tgid: u32,
    /// The waiting thread, and its name at the wait (`--locks-by task`).
    pub tid: u32,
    pub comm: [u8; 16],
    /// The waiter's DWARF-unwound user stack in [`crate::unwind::MAP_USER_STACKS`]
    /// (`--call-graph dwarf`), 0 when none was taken.
    pub user_stack: u64,
}
const _: () = assert!(core::mem::size_of::<LockKey>() == 48);

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct LockStats {
    pub count: u64,
    pub wait_ns: u64,
    pub max_ns: u64,
}
const _: () = assert!(core::mem::size_of::<LockStats>() == 24);

/// Key of the in-flight contention map: a task can wait on a spinlock inside a mutex slow path.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LockStartKey {
    pub lock_addr: u64,
    pub tid: u32,
    pub _reserved: u32,
}
const _: () = assert!(core::mem::size_of::<LockStartKey>() == 16);

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct LockStart {
    pub ts_ns: u64,
    /// The lock, for the kretprobe variant whose exit carries no arguments.
    pub lock_addr: u64,
    pub kstack_id: i32,
    pub flags: u32,
    /// See [`LockKey::user_stack`].
    pub user_stack: u64,
}
const _: () = assert!(core::mem::size_of::<LockStart>() == 32);
