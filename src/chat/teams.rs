//! Microsoft Teams delivery (Adaptive Cards through a Workflows webhook); written by the Teams work.
