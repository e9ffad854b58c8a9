//! `validate` on directories: exit codes and messages.
