"""A stack's state: its texts, how they are checked, stored (full or as deltas, inline or
as blobs) and rebuilt at any version, journals replayed. Stacks and updates both use it;
it uses neither."""
