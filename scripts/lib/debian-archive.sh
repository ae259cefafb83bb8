#!/usr/bin/env bash
# Downloads from a Debian archive, for scripts/install-criu and scripts/install-test-vm (sourced,
# not run). What is fetched is checked by the caller (gpgv, then SHA-256 down the chain).

# fetch URL FILE: a download that outlasts a passing network fault (a reset, a refused
# connection, a failed name lookup, an HTTP error), which plain --retry does not retry.
fetch() { curl -fsSL --retry 5 --retry-all-errors -o "$2" "$1"; }

# fetch_index DIR NAME SHA256 FILE: the index DIR/NAME (DIR a URL under dists/<suite>/) that
# the suite's verified InRelease lists with SHA256, by its hash first (an immutable file): a
# mirror or CDN serving a newer InRelease beside a cached older index would fail the check on
# the plain path ("Hash Sum mismatch" in apt's words). A mirror without by-hash (a file://
# one) gets the plain path.
fetch_index() {
  curl -fsSL --retry 3 -o "$4" "$1/by-hash/SHA256/$3" || fetch "$1/$2" "$4"
}
