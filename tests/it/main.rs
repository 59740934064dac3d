//! The one integration-test binary (redb/Qdrant style): each module a kind of test.

mod golden;
