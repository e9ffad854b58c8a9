//! `plan`: the semantic difference between the effective assignments of two revisions.
