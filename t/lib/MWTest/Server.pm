package MWTest::Server;

# What the fake HTTP servers (MWTest::Inbox, MWTest::Graph) share: a
# socket listening on 127.0.0.1 (any free port), a forked child that
# accepts connections and hands each one to the fake's own code, and the
# reading of one HTTP/1.1 request off a connection.  What is answered,
# what is recorded and where, stays with each fake.
#
#   my $listen = MWTest::Server::listen_local('graph', 256);
#   ... $self->{port} = $listen->sockport; write the control file ...
#   $self->{pid} = MWTest::Server::spawn($listen, sub {
#       my ($c, $listen) = @_;          # an accepted connection
#       my $buf = '';
#       my ($head, $body) = MWTest::Server::read_request($c, \$buf);
#       ...
#   }, fork_each => 1, group => 1);

use strict;
use warnings;

use IO::Select;
use IO::Socket::INET;
use POSIX ();
use Time::HiRes ();

# a listening socket on 127.0.0.1, any free port; $name is for the error
sub listen_local {
    my ($name, $backlog) = @_;
    return IO::Socket::INET->new(
        LocalAddr => '127.0.0.1', LocalPort => 0, Proto => 'tcp',
        Listen => $backlog, ReuseAddr => 1,
    ) || die "$name listen: $!";
}

# Forks the server, which calls $serve->($c, $listen) for every accepted
# connection ($c in binmode; $serve closes it).  Options:
#   fork_each => 1   every connection served by its own forked child, so
#                    slow answers and kept-alive connections do not hold
#                    up the others
#   group => 1       the server in its own process group, so that one
#                    kill of -PID stops it and every child at once
# Closes $listen here and returns the server's pid.
sub spawn {
    my ($listen, $serve, %o) = @_;
    my $pid = fork;
    die "fork: $!" unless defined $pid;
    if (!$pid) {
        POSIX::setpgid(0, 0) if $o{group};
        $SIG{$_} = 'DEFAULT' for qw(TERM INT HUP);
        $SIG{CHLD} = 'IGNORE';
        $SIG{PIPE} = 'IGNORE';
        eval { _accept_loop($listen, $serve, $o{fork_each}) };
        POSIX::_exit(0);
    }
    close $listen;
    # the group exists once the child has called setpgid; doing it here
    # too closes the race with an early kill of the group
    POSIX::setpgid($pid, $pid) if $o{group};
    return $pid;
}

sub _accept_loop {
    my ($listen, $serve, $fork_each) = @_;
    while (1) {
        my $c = $listen->accept;
        if (!$c) {
            next if $!{EINTR} || $!{ECONNABORTED};
            last;
        }
        binmode $c;
        my $pid = $fork_each ? fork : undef;
        if (!defined $pid) {            # served here (or no fork)
            $serve->($c, $listen);
            next;
        }
        if ($pid == 0) {
            close $listen;
            eval { $serve->($c, $listen) };
            POSIX::_exit(0);
        }
        close $c;
    }
}

# One request off the connection: (head, body), () at a clean EOF, undef
# on an error or a timeout.  Bytes read past the request stay in $$bufref
# for the next call (keep-alive).  Options: timeout (seconds for the whole
# request, default 10), continue => 1 (answer "Expect: 100-continue").
sub read_request {
    my ($c, $bufref, %o) = @_;
    my $sel = IO::Select->new($c);
    my $end = Time::HiRes::time() + ($o{timeout} // 10);
    my ($head, $need, $continued);
    while (1) {
        if (!defined $head) {
            my $i = index $$bufref, "\r\n\r\n";
            if ($i >= 0) {
                $head = substr $$bufref, 0, $i;
                substr($$bufref, 0, $i + 4) = '';
                if ($head =~ /^content-length:\s*(\d+)/im) {
                    $need = $1;
                } elsif ($head =~ /^transfer-encoding:\s*chunked/im) {
                    $need = -1;
                } else {
                    $need = 0;
                }
                if ($o{continue} && $head =~ /^expect:\s*100-continue/im
                    && !$continued++)
                {
                    syswrite $c, "HTTP/1.1 100 Continue\r\n\r\n";
                }
            }
        }
        if (defined $head) {
            if ($need >= 0 && length $$bufref >= $need) {
                my $body = substr $$bufref, 0, $need;
                substr($$bufref, 0, $need) = '';
                return ($head, $body);
            }
            if ($need < 0 && $$bufref =~ /(?:^|\r\n)0\r\n\r\n/) {
                my $out = '';
                while ($$bufref =~ s/^([0-9a-fA-F]+)[^\r\n]*\r\n//) {
                    my $n = hex $1;
                    if ($n == 0) { $$bufref =~ s/^\r\n//; last }
                    $out .= substr $$bufref, 0, $n;
                    substr($$bufref, 0, $n + 2) = '';
                }
                return ($head, $out);
            }
        }
        my $left = $end - Time::HiRes::time();
        return undef if $left <= 0;
        next unless $sel->can_read($left);
        my $n = sysread $c, $$bufref, 65536, length $$bufref;
        return undef unless defined $n;
        if ($n == 0) {
            return () if !defined $head && $$bufref eq '';
            return undef;
        }
    }
}

1;
