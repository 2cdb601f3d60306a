//! The push path of the actors (design.md §5 and §6: P1-P9, P11, H1) against a real
//! loopback platform, driven only through the actors' messages. How the Queue takes
//! each class of answer (P10) and the backoff timers are in the `response_classes`
//! tests.
//!
//! | module       | what its tests prove                                             |
//! |--------------|------------------------------------------------------------------|
//! | [`payload`]  | what a push sends, and in entries of what size (P1, P2, P9, P11) |
//! | [`deferred`] | pushes that send nothing now, and what they keep (P3-P6)         |
//! | [`once`]     | each dispatch goes out once, across restarts and retries (P7, P8) |
//! | [`observed`] | the history records (H1), `Debug` output without the token       |
//!
//! Wall-clock checks use windows around the call (`before`/`after`).

mod deferred;
mod observed;
mod once;
mod payload;
