//! The control-plane listener (separate port): health, readiness, metrics; later approval
//! pages, chat callbacks and the approval API.
