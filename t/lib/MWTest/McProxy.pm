package MWTest::McProxy;

# A proxy in front of one memcached server, for the tests: it listens on
# a free 127.0.0.1 port and passes every connection through, reading the
# client's side command by command (the text protocol, data blocks
# skipped), so that a test sees the commands the module sends and can
# step in between two of them.  Core Perl modules only.
#
#   my $px = MWTest::McProxy->start($mc->port(0));
#   $px->port;                   # the port to give the module
#   $px->commands;               # the command lines seen so far
#   $px->reads;                  # each read of a client connection: [the
#                                # TCP data segments that carried it, the
#                                # command lines it completed]
#   $px->before_cas($key, $v, $n);  # the next $n (1) "cas $key ..." are
#                                # each preceded by a set of $key to $v,
#                                # made by the proxy on a connection of
#                                # its own: another writer between the
#                                # module's read and its cas
#   $px->cut_next_get;           # the next get or gets closes its
#                                # connection instead of being passed on
#
# The arms are files in the proxy's directory, looked at by the proxy
# (a forked child) on each command, and removed once used.

use strict;
use warnings;

use IO::Select;
use IO::Socket::INET;
use POSIX ();
use Socket qw(IPPROTO_TCP TCP_INFO);

use MWTest ();
use MWTest::Memcached ();

use parent 'MWTest::Owned';

sub start {
    my ($class, $upstream) = @_;
    my $self = bless { dir => MWTest::new_dir('mcproxy'), owner => $$,
                       upstream => $upstream }, $class;
    MWTest::register($self);
    for my $attempt (1 .. 5) {
        my $port = MWTest::free_port();
        my $listen = IO::Socket::INET->new(LocalAddr => '127.0.0.1',
            LocalPort => $port, Listen => 64, ReuseAddr => 1) or next;
        my $pid = fork;
        die "fork: $!" unless defined $pid;
        if (!$pid) {
            $SIG{$_} = 'DEFAULT' for qw(TERM INT HUP);
            $SIG{PIPE} = 'IGNORE';
            _serve($self, $listen);
            POSIX::_exit(0);
        }
        close $listen;
        @$self{qw(port pid)} = ($port, $pid);
        return $self;
    }
    die "no port for the memcached proxy";
}

sub port { $_[0]{port} }

sub commands {
    my ($self) = @_;
    my $t = MWTest::slurp("$self->{dir}/commands.log") // '';
    return split /\n/, $t;
}

sub before_cas {
    my ($self, $key, $value, $n) = @_;
    MWTest::spew("$self->{dir}/arm-cas", ($n // 1) . "\n$key\n$value");
}

sub reads {
    my ($self) = @_;
    my $t = MWTest::slurp("$self->{dir}/reads.log") // '';
    return map { my ($n, @c) = split /\t/; [$n, \@c] } split /\n/, $t;
}

sub cut_next_get { MWTest::spew("$_[0]{dir}/arm-cut", "1") }

sub armed { -e "$_[0]{dir}/arm-cas" || -e "$_[0]{dir}/arm-cut" }

sub stop {
    my ($self) = @_;
    my $pid = delete $self->{pid} or return;
    kill 'KILL', $pid;
    waitpid $pid, 0;
}


# --- the child

sub _serve {
    my ($self, $listen) = @_;
    my $dir = $self->{dir};
    open my $log, '>>', "$dir/commands.log" or POSIX::_exit(1);
    open my $rlog, '>>', "$dir/reads.log" or POSIX::_exit(1);
    $_->autoflush(1) for $log, $rlog;
    my $sel = IO::Select->new($listen);
    my (%peer, %client, %buf, %segs);

    my $drop = sub {
        my @pair = grep { defined } ($_[0], $peer{$_[0]});
        for my $fh (@pair) {
            $sel->remove($fh);
            delete @{$_}{$fh} for \%peer, \%client, \%buf, \%segs;
        }
        close $_ for @pair;
    };

    while (1) {
        for my $fh ($sel->can_read) {
            next unless $fh == $listen || exists $peer{$fh};
            if ($fh == $listen) {
                my $c = $listen->accept or next;
                my $u = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                    PeerPort => $self->{upstream}, Proto => 'tcp')
                    or do { close $c; next };
                binmode $_ for $c, $u;
                @peer{$c, $u} = ($u, $c);
                $client{$c} = 1;
                $buf{$c} = '';
                $segs{$c} = 0;
                $sel->add($c, $u);
                next;
            }
            my $n = sysread $fh, my $data, 65536;
            if (!$n) { $drop->($fh); next }
            if (!$client{$fh}) { _write($peer{$fh}, $data); next }
            $buf{$fh} .= $data;
            my $segs = _data_segs_in($fh);
            my $carried = $segs - $segs{$fh};
            $segs{$fh} = $segs;
            my @lines;
            while (defined(my $cmd = _next_command(\$buf{$fh}))) {
                my ($line) = $cmd =~ /^([^\r]*)/;
                print $log "$line\n";
                push @lines, $line;
                if ($line =~ /^gets? / && unlink "$dir/arm-cut") {
                    $drop->($fh);
                    last;
                }
                if ($line =~ /^cas (\S+) / && -e "$dir/arm-cas") {
                    my ($n, $key, $value) =
                        split /\n/, MWTest::slurp("$dir/arm-cas"), 3;
                    if ($key eq $1) {
                        if ($n > 1) {
                            MWTest::spew("$dir/arm-cas",
                                         ($n - 1) . "\n$key\n$value");
                        } else {
                            unlink "$dir/arm-cas";
                        }
                        MWTest::Memcached::_talk($self->{upstream},
                            "set $key 0 0 " . length($value)
                            . "\r\n$value\r\n", qr/\r\n\z/, 2);
                    }
                }
                _write($peer{$fh}, $cmd);
            }
            print $rlog join("\t", $carried, @lines), "\n";
        }
    }
}

# the data segments a connection has received (Linux's tcp_info)
sub _data_segs_in {
    my ($fh) = @_;
    my $info = getsockopt($fh, IPPROTO_TCP, TCP_INFO);
    return 0 unless defined $info && length $info >= 156;
    # after 8 bytes, 24 32-bit and 4 64-bit fields, segs_out, segs_in,
    # notsent_bytes and min_rtt: tcpi_data_segs_in
    return unpack 'L', substr $info, 152, 4;
}

# the next whole command in $$buf, taken out of it; undef until complete
sub _next_command {
    my ($buf) = @_;
    my $eol = index $$buf, "\r\n";
    return undef if $eol < 0;
    my $len = $eol + 2;
    if (substr($$buf, 0, $eol)
            =~ /^(?:set|add|replace|append|prepend|cas) \S+ \d+ -?\d+ (\d+)/)
    {
        $len += $1 + 2;
        return undef if length $$buf < $len;
    }
    return substr $$buf, 0, $len, '';
}

sub _write {
    my ($fh, $data) = @_;
    while (length $data) {
        my $n = syswrite $fh, $data;
        return unless $n;
        substr $data, 0, $n, '';
    }
}

1;
