//! A thin wrapper around `bollard::Docker`: one file per engine resource, bollard's types
//! converted to ours at this boundary.
