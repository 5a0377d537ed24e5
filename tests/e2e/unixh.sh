# Tests of unix sockets from CRIU's zdtm (issue 12, helper "unix"). Sourced
# by run.sh: uses its helpers (cr_test...) and adds its tests to ALL_TESTS.

# Names relative to the process's working directory (zdtm sk-unix-rel,
# sk-unix-listen01, fifo_upon_unix_socket01): recorded with CRIU's
# `name_dir`, bound again from there.
t_unix_rel() { mkdir -p "$D/files" && cr_test unixnames --mode rel --dir "$D/files"; }
# A datagram server others connected to (established, no peer: zdtm
# socket_dgram_data, sockets_dgram) and stream/seqpacket sockets bound but
# never connected (sk-unix-unconn: no queue to peek).
t_unix_lone() { cr_test unixnames --mode lone; }
# Names whose files were gone at dump time, something else at the path
# since (zdtm del_standalone_un, fifo_upon_unix_socket00, sk-unix01,
# sk-unix-dgram-ghost): bound as ghosts, the other file left in place.
t_unix_ghost() { mkdir -p "$D/files" && cr_test unixnames --mode ghost --dir "$D/files"; }
ALL_TESTS+=(unix-rel unix-lone unix-ghost)
