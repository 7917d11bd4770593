#!/usr/bin/env bash
# The cost of one deploy-journal record (state::journal): an atomic rewrite of journal.json
# (temp file, fsync, rename, directory fsync), the record apply writes before and after each
# step. Prints ms per record, measured over 200 records in a temp dir on this machine's disk
# (TMPDIR decides which disk: point it at the state dir's file system to measure that one).
set -euo pipefail
cd "$(dirname "$0")/.."
JOURNAL_WRITE_ROUNDS=200 cargo test --quiet --lib state::journal::tests::journal_write_cost -- --nocapture 2>&1 \
  | grep '^journal write:'
