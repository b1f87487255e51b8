//! The epoll close path of the running kernel: whether closing an epoll-watched file takes the
//! global `epmutex`. It left eventpoll_release_file in Linux 6.4 ("epoll: use refcount to reduce
//! ep_mutex contention", backported to some stable series, Debian 6.1 among them), so kernels
//! are told apart by their symbols, never by version numbers.
use serde::Serialize;

#[derive(Debug, Serialize, Clone, Copy, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum EpollClose {
    /// `ep_free` and no `ep_clear_and_put`: eventpoll_release_file takes the global epmutex.
    GlobalEpmutex,
    /// The refcount rework (Linux 6.4, backported): no global mutex on close.
    Refcounted,
}

/// Tells the two epoll eras apart by symbols, never by version numbers.
pub fn epoll_close_era(has: impl Fn(&str) -> bool) -> Option<EpollClose> {
    if has("ep_clear_and_put") || has("ep_refcount_dec_and_test") {
        Some(EpollClose::Refcounted)
    } else if has("ep_free") && has("epmutex") {
        Some(EpollClose::GlobalEpmutex)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoll_era_comes_from_symbols() {
        let has = |set: &'static [&'static str]| move |s: &str| set.contains(&s);
        // 5.10: ep_free and epmutex, no refcount rework.
        assert_eq!(
            epoll_close_era(has(&["ep_free", "epmutex"])),
            Some(EpollClose::GlobalEpmutex)
        );
        // 6.1 with the backport: epmutex symbol remains, but ep_clear_and_put exists.
        assert_eq!(
            epoll_close_era(has(&["ep_free", "epmutex", "ep_clear_and_put"])),
            Some(EpollClose::Refcounted)
        );
        // 6.18: epnested_mutex, ep_clear_and_put.
        assert_eq!(
            epoll_close_era(has(&["ep_clear_and_put", "epnested_mutex"])),
            Some(EpollClose::Refcounted)
        );
        assert_eq!(epoll_close_era(has(&[])), None);
    }
}
