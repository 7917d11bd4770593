//! Where the desired state comes from: a git repository (fetched with git2 into a cache under
//! the state dir) or, for `diff --local`, a directory. Files are always read from the tree of
//! the resolved commit, never from a working tree.
