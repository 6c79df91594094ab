package MWTest::Memcached;

# A memcached fleet for the tests: N real memcached servers on
# 127.0.0.1, each in the foreground of a forked child in a process group
# of its own, on a free port.  Faults on demand: kill one (SIGKILL), pause
# one (SIGSTOP: it still accepts connections, the kernel queues them, and
# nothing ever answers: a server "silently dropping packets"), resume it,
# restart it on the same port; flush; read keys over the text protocol
# for the tests' assertions.  Core Perl modules only.
#
#   use MWTest::Memcached;
#   my $mc = MWTest::Memcached->start(3);
#   http_conf => "meta_webhook_state memcached " . $mc->servers . ";"
#   $mc->kill(1);  $mc->restart(1);
#   $mc->pause(2); $mc->resume(2);
#   my ($value, $i) = $mc->find('mw:d:...');   # on whichever server
#   my $key = MWTest::Memcached::message_key($wamid);  # as the module
#   my $ng = $mc->node(inbox => $inbox);    # an nginx on this fleet
#
# Every server started here is stopped when the test ends, even when it
# dies (registered with MWTest's cleanup, and an END block of its own);
# forked children never stop them.

use strict;
use warnings;

use Digest::SHA ();
use IO::Select;
use IO::Socket::INET;
use POSIX ();
use Time::HiRes ();

use MWTest ();

use parent 'MWTest::Owned';       # stop() when its owner is done

our $BINARY = $ENV{TEST_MEMCACHED_BINARY} || '/usr/bin/memcached';
our @ALL;                       # every fleet of this process

sub available { -x $BINARY }

# MWTest::Memcached->start($n, memory => 16 (MB))
sub start {
    my ($class, $n, %o) = @_;
    $n //= 3;
    die "no memcached at $BINARY" unless -x $BINARY;
    my $self = bless { dir => MWTest::new_dir('memcached'), owner => $$,
                       memory => $o{memory} // 16, servers => [] }, $class;
    MWTest::register($self);
    push @ALL, $self;
    for my $i (0 .. $n - 1) {
        $self->{servers}[$i] = { port => undef, pid => undef,
                                 state => 'down' };
        $self->_spawn($i);
    }
    return $self;
}

sub count { scalar @{ $_[0]{servers} } }
sub dir   { $_[0]{dir} }
sub port  { $_[0]{servers}[$_[1]]{port} }
sub pid   { $_[0]{servers}[$_[1]]{pid} }
sub ports { map { $_->{port} } @{ $_[0]{servers} } }

# 'up', 'paused' or 'down'
sub state { $_[0]{servers}[$_[1]]{state} }

# "127.0.0.1:P1 127.0.0.1:P2 ..." for meta_webhook_state memcached
sub servers {
    my ($self) = @_;
    return join ' ', map { "127.0.0.1:$_" } $self->ports;
}

sub _cmd {
    my ($self, $port) = @_;
    my @cmd = ($BINARY, '-l', '127.0.0.1', '-p', $port, '-U', '0',
               '-m', $self->{memory}, '-c', '1024', '-t', '2');
    push @cmd, '-u', 'root' if $> == 0;
    return @cmd;
}

# Starts server $i: on its old port when it has one (a restart), else
# on a free port (retried on a port taken meanwhile).
sub _spawn {
    my ($self, $i) = @_;
    my $s = $self->{servers}[$i];
    my $fixed = defined $s->{port};
    my $log = "$self->{dir}/memcached-$i.log";
    my $err = '';
    for my $attempt (1 .. ($fixed ? 1 : 5)) {
        my $port = $fixed ? $s->{port} : MWTest::free_port();
        my $pid = fork;
        die "fork: $!" unless defined $pid;
        if (!$pid) {
            POSIX::setsid();           # a process group of its own
            $SIG{$_} = 'DEFAULT' for qw(TERM INT HUP PIPE);
            open STDIN, '<', '/dev/null';
            open STDOUT, '>>', $log;
            open STDERR, '>&', \*STDOUT;
            exec($self->_cmd($port)) or POSIX::_exit(127);
        }
        my $up = MWTest::wait_until(sub {
            return 'dead' if waitpid($pid, POSIX::WNOHANG()) == $pid;
            my $v = _talk($port, "version\r\n", qr/\r\n\z/, 0.5);
            return defined $v && $v =~ /^VERSION / ? 'up' : 0;
        }, 10);
        if ($up && $up eq 'up') {
            @$s{qw(port pid state)} = ($port, $pid, 'up');
            return $self;
        }
        if (!$up) { CORE::kill('KILL', -$pid); CORE::kill('KILL', $pid); waitpid $pid, 0 }
        $err = MWTest::slurp($log) // '';
        last unless $err =~ /in use|bind|listen/i;
    }
    die "memcached $i did not start:\n$err";
}

# SIGKILL server $i (and its process group); waits until it is gone.
sub kill {
    my ($self, $i) = @_;
    my $s = $self->{servers}[$i];
    my $pid = $s->{pid} or return;
    CORE::kill('KILL', -$pid);
    CORE::kill('KILL', $pid);
    waitpid $pid, 0;
    $s->{pid} = undef;
    $s->{state} = 'down';
    return 1;
}

# SIGSTOP server $i: the kernel still completes connections and queues
# what is written, nothing is ever answered.
sub pause {
    my ($self, $i) = @_;
    my $s = $self->{servers}[$i];
    return unless $s->{pid};
    CORE::kill('STOP', $s->{pid});
    $s->{state} = 'paused';
    return 1;
}

sub resume {
    my ($self, $i) = @_;
    my $s = $self->{servers}[$i];
    return unless $s->{pid};
    CORE::kill('CONT', $s->{pid});
    $s->{state} = 'up';
    return 1;
}

# Starts server $i again on the same port, empty (killed first if
# running).  Retries for a few seconds while the port is not free yet.
sub restart {
    my ($self, $i) = @_;
    $self->kill($i) if $self->{servers}[$i]{pid};
    my $ok = MWTest::wait_until(sub { eval { $self->_spawn($i); 1 } }, 10,
                                0.2);
    die "memcached $i did not restart on port "
        . $self->port($i) unless $ok;
    return $self;
}

# --- the text protocol (for assertions), short timeouts

# Sends $req to $port, reads until $end_re matches the answer; undef on
# any failure or timeout.
sub _talk {
    my ($port, $req, $end_re, $timeout) = @_;
    $timeout //= 1;
    my $deadline = Time::HiRes::time() + $timeout;
    my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
        PeerPort => $port, Proto => 'tcp', Timeout => $timeout)
        or return undef;
    binmode $sock;
    my $sel = IO::Select->new($sock);
    syswrite($sock, $req) == length $req or return undef;
    my $buf = '';
    while ($buf !~ $end_re) {
        my $left = $deadline - Time::HiRes::time();
        return undef if $left <= 0;
        next unless $sel->can_read($left);
        my $n = sysread $sock, $buf, 65536, length $buf;
        return undef unless $n;
    }
    close $sock;
    return $buf;
}

# any command on server $i; the raw answer up to its end
sub command {
    my ($self, $i, $cmd, $end_re) = @_;
    return _talk($self->port($i), "$cmd\r\n",
                 $end_re // qr/(?:^|\r\n)(?:END|OK|ERROR|[A-Z_]+)\r\n\z/);
}

# The value of $key on server $i, or undef (absent, or server down).
# In list context: (value, flags).
sub get {
    my ($self, $i, $key) = @_;
    die "bad key for the text protocol: '$key'"
        if $key =~ /[\s\x00-\x1f]/ || length $key > 250;
    return undef unless $self->{servers}[$i]{state} eq 'up';
    my $a = _talk($self->port($i), "get $key\r\n",
                  qr/(?:^|\r\n)(?:END|ERROR|CLIENT_ERROR[^\r]*)\r\n\z/)
        // return undef;
    return undef unless $a =~ /^VALUE \S+ (\d+) (\d+)\r\n/;
    my ($flags, $len) = ($1, $2);
    my $v = substr $a, length($&), $len;
    return wantarray ? ($v, $flags) : $v;
}

# Looks $key up on every running server: in list context
# (value, index of the server that has it, number of servers that have
# it); in scalar context the value.
sub find {
    my ($self, $key) = @_;
    my ($val, $at, $n) = (undef, undef, 0);
    for my $i (0 .. $self->count - 1) {
        my $v = $self->get($i, $key);
        next unless defined $v;
        $n++;
        ($val, $at) = ($v, $i) unless defined $at;
    }
    return wantarray ? ($val, $at, $n) : $val;
}

# flush_all on server $i, or on every running server; true when all
# answered OK
sub flush {
    my ($self, $i) = @_;
    my @which = defined $i ? ($i) : grep { $self->state($_) eq 'up' }
                                    0 .. $self->count - 1;
    my $ok = 1;
    for my $j (@which) {
        my $a = $self->command($j, 'flush_all') // '';
        $ok = 0 unless $a eq "OK\r\n";
    }
    return $ok;
}

# {name => value} of "stats" on server $i
sub stats {
    my ($self, $i) = @_;
    my $a = $self->command($i, 'stats', qr/(?:^|\r\n)END\r\n\z/) // return {};
    my %s;
    $s{$1} = $2 while $a =~ /^STAT (\S+) (\S+)\r$/mg;
    return \%s;
}

# the number of items on server $i (curr_items), undef when down
sub items {
    my ($self, $i) = @_;
    return undef unless $self->state($i) eq 'up';
    return $self->stats($i)->{curr_items};
}

# --- keys, as the module builds them (src/mw_key.c, mw_state.c), for
#     assertions: "mw:" + type letter + ":" + the first 16 bytes of
#     SHA-256 over the type byte and length-prefixed parts, in hex.
#     A message's dedupe key hex is also its event's event_id.

sub key_hex {
    my ($type, @parts) = @_;
    my $in = $type . join '', map { pack('N', length $_) . $_ } @parts;
    return substr Digest::SHA::sha256_hex($in), 0, 32;
}

sub message_key { 'mw:d:' . key_hex('d', 'message', $_[0]) }
sub status_key  { 'mw:d:' . key_hex('d', 'status', $_[0], $_[1]) }
sub contact_key { 'mw:c:' . key_hex('c', $_[0], $_[1]) }   # pnid, wa_id

# A contact record (mw_state.h): "window session counted optin optin_ts"
sub contact_record {
    my ($v) = @_;
    return undef unless defined $v;
    my @f = split / /, $v;
    return undef unless @f == 5 || @f == 6;   # a sixth: a count pending
    my %r;
    @r{qw(window session counted optin optin_ts pending)} = (@f, 0)[0 .. 5];
    return \%r;
}


# --- a fleet node: an nginx with the state in this memcached fleet

# $mc->node(inbox => $inbox, workers => 2, state => 'poll_timeout=300ms',
#           graph => $graph (an MWTest::Graph: adds the send path),
#           webhook_extra => '...', send_extra => '...', http_extra =>
#           '...', server_extra => '...', main_conf => '...' (e.g. a
#           thread_pool), error_level => 'info')
# A started MWTest::Nginx with
#   /webhook    the endpoint, proxying to the inbox
#   /local      the endpoint answering itself
#   /graph/     meta_webhook_send to the fake Graph API (with graph)
#   = /status   meta_webhook_status
sub node {
    my ($self, %o) = @_;
    my $ng = MWTest::Nginx->new(workers => $o{workers} // 2,
                                error_level => $o{error_level} // 'info');
    my $state = 'meta_webhook_state memcached '
              . ($o{servers} // $self->servers)
              . (length($o{state} // '') ? " $o{state}" : '') . ";\n";
    my $server = MWTest::webhook_location(
            inbox => $o{inbox}->port, secret => '%SECRET_FILE%',
            extra => $o{webhook_extra})
        . MWTest::webhook_location(path => '/local',
            secret => '%SECRET_FILE%', extra => $o{webhook_extra})
        . "location = /status {\n    meta_webhook_status;\n}\n";
    if ($o{graph}) {
        $ng->write_file('access_token', "EAAfleetTestToken0123456789\n");
        $server .= "location /graph/ {\n"
                 . "    meta_webhook_send;\n"
                 . "    meta_webhook_access_token_file "
                 . "%DIR%/conf/access_token;\n"
                 . '    meta_webhook_graph_url ' . $o{graph}->url . ";\n"
                 . "    meta_webhook_graph_timeout 5s;\n"
                 . ($o{send_extra} ? "    $o{send_extra}\n" : '')
                 . "}\n";
    }
    $server .= $o{server_extra} // '';
    $ng->start(http_conf => "    $state" . ($o{http_extra} // ''),
               server_conf => $server, main_conf => $o{main_conf});
    return $ng;
}


# --- stop

sub stop {
    my ($self) = @_;
    for my $i (0 .. $#{ $self->{servers} }) {
        my $s = $self->{servers}[$i];
        next unless $s->{pid};
        CORE::kill('CONT', $s->{pid}) if $s->{state} eq 'paused';
        $self->kill($i);
    }
}


END {
    my $status = $?;
    for my $mc (@ALL) {
        next unless $$ == ($mc->{owner} // 0);
        eval { $mc->stop };
    }
    $? = $status;
}

1;
