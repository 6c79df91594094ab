#!/usr/bin/perl
# A fleet under memcached faults, bounded in time and count: two nginx
# nodes, three memcached servers, one inbox.
#
#   one server killed mid-burst     no request waits longer than the short
#                                   timeouts; every update reaches the
#                                   inbox exactly once, or is answered
#                                   non-2xx and handed off exactly once
#                                   when retried
#   one server back                 normal again
#   one server paused (SIGSTOP:     requests still bounded; after SIGCONT,
#   silently dropping packets)      retries handed off exactly once
#   all servers down                deliveries answered 503 fast, a log
#                                   line naming memcached, state.errors
#                                   counted; handshakes still answered
#   all servers back (same ports)   normal within seconds; the retried
#                                   deliveries handed off once
#   memcached flushed or restarted  the dedupe horizon is lost: a delivery
#                                   re-sent then IS handed off again, with
#                                   the same deterministic event_id, so
#                                   the application can be idempotent

use strict;
use warnings;
use Test::More;
use lib 't/lib';
use MWTest;
use MWTest::Meta;
use MWTest::Memcached;
use POSIX ();
use Time::HiRes ();

plan skip_all => "no module at $MODULE (run make)" unless -f $MODULE;
plan skip_all => "no memcached at $MWTest::Memcached::BINARY"
    unless MWTest::Memcached::available();

# every request must be answered within this (the timeouts are 300 ms)
my $BOUND = 2.0;

my $mc = MWTest::Memcached->start(3);
my $inbox = MWTest::Inbox->start;
# A paused server executes, once resumed, the commands queued while it
# was stopped: the claims ("add") of deliveries that were answered 503
# meanwhile appear then, and the retries of those updates are "busy"
# until the claim's lease ends.  A short lease keeps that within the
# test's bounds (the default is 60 s).
my $LEASE = 4;
my @node = map {
    $mc->node(inbox => $inbox, workers => 2,
              state => 'connect_timeout=300ms poll_timeout=300ms '
                     . 'dead_timeout=2s',
              webhook_extra => "meta_webhook_claim_timeout ${LEASE}s;")
} 1 .. 2;

sub result { $_[0]->status . ' ' . ($_[0]->header('x-mw-result') // '-') }

# id => how many hand-offs carried it
sub hand_counts {
    my %n;
    $n{ $_->{id} // '' }++ for $inbox->events;
    return \%n;
}

sub events_of {
    my ($id) = @_;
    return grep { ($_->{id} // '') eq $id } $inbox->events;
}

# $n unique one-message deliveries: ([ids], [bodies])
sub uniques {
    my ($n, $tag) = @_;
    my (@ids, @bodies);
    for my $k (0 .. $n - 1) {
        my $m = msg_text(from => new_contact(), body => "$tag $k");
        push @ids, $m->get('id');
        push @bodies, delivery(messages => [$m]);
    }
    return (\@ids, \@bodies);
}

# A delivery, timed: {status, result, elapsed, node}
sub timed {
    my ($n, $body) = @_;
    my $t0 = Time::HiRes::time();
    my $r = $node[$n]->deliver($body, timeout => 10);
    return { status => $r->status, result => $r->header('x-mw-result')
                                             // ($r->error_message // '-'),
             elapsed => Time::HiRes::time() - $t0, node => $n };
}

# Sends every body once from $clients forked clients (client c sends the
# bodies k with k % clients == c, to node k % 2), all at once.
# $on_progress->($done) is called in the parent while they run (faults
# are injected from there).  Returns one record per body (see timed).
sub burst {
    my ($bodies, %o) = @_;
    my $clients = $o{clients} // 4;
    my $dir = MWTest::new_dir('burst');
    my @pids;
    for my $c (0 .. $clients - 1) {
        my $pid = fork;
        die "fork: $!" unless defined $pid;
        if (!$pid) {
            wait_until(sub { -e "$dir/go" }, 10, 0.001);
            open my $fh, '>>', "$dir/res-$c" or POSIX::_exit(1);
            $fh->autoflush(1);
            for (my $k = $c; $k < @$bodies; $k += $clients) {
                my $t0 = Time::HiRes::time();
                my $t = timed($k % 2, $bodies->[$k]);
                print {$fh} join(' ', $k, @$t{qw(node status elapsed)},
                                 $t->{result} =~ s/\s+/_/gr, $t0), "\n";
            }
            close $fh;
            POSIX::_exit(0);
        }
        push @pids, $pid;
    }
    spew("$dir/go", '');
    my %left = map { $_ => 1 } @pids;
    my $lines = sub {
        my $n = 0;
        for my $c (0 .. $clients - 1) {
            my $s = slurp("$dir/res-$c") // '';
            $n += () = $s =~ /\n/g;
        }
        return $n;
    };
    my $end = deadline($o{timeout} // 60);
    while (%left && Time::HiRes::time() < $end) {
        for my $p (keys %left) {
            delete $left{$p} if waitpid($p, POSIX::WNOHANG()) != 0;
        }
        $o{on_progress}->($lines->()) if $o{on_progress};
        Time::HiRes::sleep(0.01);
    }
    for my $p (keys %left) { kill 'KILL', $p; waitpid $p, 0 }
    my @rec;
    for my $c (0 .. $clients - 1) {
        for my $l (split /\n/, slurp("$dir/res-$c") // '') {
            my ($k, $n, $st, $el, $res, $t0) = split / /, $l;
            $rec[$k] = { node => $n, status => $st, elapsed => $el,
                         result => $res, started => $t0 };
        }
    }
    $rec[$_] //= { status => 0, result => 'no answer (client killed)',
                   elapsed => 99, node => $_ % 2 } for 0 .. $#$bodies;
    return @rec;
}

# Retries (as Meta does, paced) every body whose index is in @$pending,
# alternating nodes, until it is answered 2xx or $timeout passes.
# Returns (index => final record, [indexes never accepted],
# [retries slower than $BOUND]).
sub retry_until_ok {
    my ($bodies, $pending, $timeout) = @_;
    my @left = @$pending;
    my (%done, @slow, %last);
    my $end = deadline($timeout // 15);
    my $round = 0;
    while (@left && Time::HiRes::time() < $end) {
        $round++;
        my @still;
        for my $k (@left) {
            my $t = timed(($k + $round) % 2, $bodies->[$k]);
            push @slow, "$k: $t->{elapsed}" if $t->{elapsed} >= $BOUND;
            if ($t->{status} >= 200 && $t->{status} < 300) {
                $done{$k} = $t;
            } else {
                $last{$k} = "$t->{status} $t->{result}";
                push @still, $k;
            }
        }
        @left = @still;
        Time::HiRes::sleep(0.1) if @left;
    }
    return (\%done, [ map { "$_ ($last{$_})" } @left ], \@slow);
}

sub summary_of {
    my (@rec) = @_;
    my %h;
    $h{"$_->{status} $_->{result}"}++ for @rec;
    return join ', ', map { "$_ x$h{$_}" } sort keys %h;
}

sub max_elapsed {
    my $m = 0;
    for (@_) { $m = $_->{elapsed} if $_->{elapsed} > $m }
    return sprintf '%.3f', $m;
}

# the whole story of a burst: bounded answers, retries, exactly once
sub check_exactly_once {
    my ($label, $ids, $bodies, $rec) = @_;
    my @rec = @$rec;
    my @bad = grep { $rec[$_]{status} != 200 && $rec[$_]{status} != 503 }
              0 .. $#rec;
    is scalar @bad, 0, "$label: every delivery answered 200 or 503"
        or diag join "\n", map { "$_: $rec[$_]{status} $rec[$_]{result}" }
                           @bad[0 .. ($#bad < 9 ? $#bad : 9)];
    my @slow = grep { $rec[$_]{elapsed} >= $BOUND } 0 .. $#rec;
    is scalar @slow, 0, "$label: no delivery waited $BOUND s or more "
        . '(max ' . max_elapsed(@rec) . ' s)'
        or diag join "\n", map { "$_: $rec[$_]{elapsed} s "
                                 . "$rec[$_]{status} $rec[$_]{result}" }
                           @slow[0 .. ($#slow < 9 ? $#slow : 9)];

    # 2xx: handed exactly once; non-2xx: not at all yet
    my $n = hand_counts();
    my @ok = grep { $rec[$_]{status} == 200 } 0 .. $#rec;
    my @not = grep { $rec[$_]{status} != 200 } 0 .. $#rec;
    my @wrong = grep { ($n->{ $ids->[$_] } // 0) != 1 } @ok;
    is scalar @wrong, 0, "$label: each of the " . scalar(@ok)
        . ' deliveries answered 200 reached the inbox exactly once'
        or diag join "\n", map { "$_: $rec[$_]{result}, handed "
                                 . ($n->{ $ids->[$_] } // 0) } @wrong;
    @wrong = grep { ($n->{ $ids->[$_] } // 0) != 0 } @not;
    is scalar @wrong, 0, "$label: the " . scalar(@not)
        . ' deliveries answered non-2xx were not handed off'
        or diag join "\n", map { "$_: $rec[$_]{status} $rec[$_]{result}, "
                                 . 'handed ' . ($n->{ $ids->[$_] } // 0) }
                           @wrong;

    # Meta retries the rest: each handed off exactly once in the end
    my ($done, $never, $slow) = retry_until_ok($bodies, \@not,
                                               $LEASE + 11);
    is scalar @$never, 0, "$label: every non-2xx delivery accepted on retry"
        or diag 'never: ' . join ', ', @$never;
    is scalar @$slow, 0, "$label: no retry waited $BOUND s or more"
        or diag join "\n", @$slow;
    my @dup = grep { $done->{$_}{result} ne 'new' } keys %$done;
    is scalar @dup, 0, "$label: every retry was handed off as new"
        or diag join "\n", map { "$_: $done->{$_}{result}" } @dup;
    $n = hand_counts();
    @wrong = grep { ($n->{ $ids->[$_] } // 0) != 1 } 0 .. $#rec;
    is scalar @wrong, 0, "$label: all " . scalar(@rec)
        . ' updates reached the inbox exactly once: nothing lost, '
        . 'nothing twice'
        or diag join "\n", map { "$_: handed " . ($n->{ $ids->[$_] } // 0)
                                 . " (first answer $rec[$_]{status} "
                                 . "$rec[$_]{result})" } @wrong;
    note "$label: " . summary_of(@rec) . '; ' . scalar(@not)
         . ' retried, max ' . max_elapsed(@rec) . ' s';
}

sub status_json { $node[$_[0]]->get('/status', timeout => 5)->json // {} }

# --- a healthy start

{
    my ($ids, $bodies) = uniques(20, 'warm-up');
    my @rec = burst($bodies);
    is summary_of(@rec), '200 new x20', 'all up: 20 deliveries, 200 new';
}

# --- one server SIGKILLed mid-burst

my ($killed_bodies, $killed_rec, $killed_time);   # for "server 1 back"
{
    my ($ids, $bodies) = uniques(200, 'burst');
    my $killed_at;
    my @rec = burst($bodies, on_progress => sub {
        my ($done) = @_;
        return if defined $killed_at || $done < 50;
        $mc->kill(1);
        $killed_at = $done;
        $killed_time = Time::HiRes::time();
    });
    ok defined $killed_at && $killed_at < 200,
        'server 1 was killed mid-burst (after ' . ($killed_at // '-')
        . ' of 200 deliveries)';
    my @after = grep { $rec[$_]{status} == 200 } 100 .. 199;
    cmp_ok scalar @after, '>', 0,
        'deliveries after the kill are accepted (its keys moved on)';
    check_exactly_once('one server killed', $ids, $bodies, \@rec);
    ($killed_bodies, $killed_rec) = ($bodies, \@rec);
}

# --- the killed server back: normal again

# Normal: $n deliveries in a row answered 200 new.  Polls (fresh unique
# deliveries, one every 50 ms, alternating nodes) for at most $timeout
# seconds; returns (seconds it took or undef, refused on the way).
sub until_normal {
    my ($n, $timeout, $tag) = @_;
    my $t0 = Time::HiRes::time();
    my ($streak, $refused, $k) = (0, 0, 0);
    my %seen;
    while (Time::HiRes::time() - $t0 < $timeout) {
        my ($ids, $bodies) = uniques(1, "$tag $k");
        my $t = timed($k++ % 2, $bodies->[0]);
        if ("$t->{status} $t->{result}" eq '200 new') {
            return (Time::HiRes::time() - $t0, $refused, \%seen)
                if ++$streak >= $n;
        } else {
            $streak = 0;
            $refused++;
            $seen{"$t->{status} $t->{result}"}++;
            Time::HiRes::sleep(0.05);
        }
    }
    return (undef, $refused, \%seen);
}

# what the nodes' error logs say about memcached since @$marks, counted
sub mc_errors {
    my ($marks) = @_;
    my %n;
    for my $i (0, 1) {
        $n{$1}++ for $node[$i]->error_log_since($marks->[$i])
                     =~ /meta_webhook: (memcached [^\n]*?failed: [^\n,]*)/g;
    }
    return join ', ', map { "$_ x$n{$_}" } sort keys %n;
}

sub normal_within {
    my ($label, $timeout) = @_;
    my @mark = map { $_->log_mark } @node;
    my ($took, $refused, $seen) = until_normal(20, $timeout, $label);
    ok defined $took, sprintf('%s: normal again (20 deliveries in a row '
        . 'handed off) within %s s; %d refused on the way', $label,
        defined $took ? sprintf('%.1f', $took) : "$timeout+", $refused)
        or diag 'refused: ' . join(', ', map { "$_ x$seen->{$_}" }
                                         sort keys %$seen)
                . "\nerror log: " . mc_errors(\@mark);
    # A node takes a failed server back when its dead timeout ends; until
    # both nodes have, they may place a key on different servers.
    my $full = wait_until(sub {
        !grep { (status_json($_)->{state}{out_of_ring} // 1) != 0 } 0, 1
    }, 5, 0.1);
    ok $full, "$label: both nodes have every server in the ring "
        . '(/status state.out_of_ring is 0)';
    @mark = map { $_->log_mark } @node;
    my ($ids, $bodies) = uniques(30, "$label after");
    my @rec = map { timed($_ % 2, $bodies->[$_]) } 0 .. 29;
    is summary_of(@rec), '200 new x30', "$label: then 30 more, all 200 new"
        or diag 'error log: ' . mc_errors(\@mark);
}

{
    $mc->restart(1);
    normal_within('server 1 back', 15);

    # What was handed off while server 1 was out went to the others; now
    # that it is back (empty), a copy must still be found there.  (What
    # was claimed on it before the kill is gone with it: only deliveries
    # sent after the kill count.)
    my @later = grep { ($killed_rec->[$_]{started} // 0)
                       > ($killed_time // 9e9) } 0 .. $#$killed_bodies;
    my @rec = map { timed($_ % 2, $killed_bodies->[$_]) } @later;
    is summary_of(@rec), '200 duplicate x' . scalar(@later),
        'server 1 back: copies of what was handed off while it was out '
        . 'are duplicates on either node';
}

# --- a server restarted under the fleet: every thread's connection to it
#     goes stale.  What was handed off meanwhile (answered 200) must stay
#     committed: re-sent after the claims' lease has ended, a duplicate,
#     never handed off twice.

{
    # every thread of every worker holds connections to every server
    my ($wids, $wbodies) = uniques(240, 'warm');
    burst($wbodies, clients => 8);
    $mc->restart(0);

    my ($ids, $bodies) = uniques(150, 'stale');
    my @rec = map { timed($_ % 2, $bodies->[$_]) } 0 .. $#$bodies;
    my @ok = grep { "$rec[$_]{status} $rec[$_]{result}" eq '200 new' }
             0 .. $#rec;
    note 'server 0 restarted: ' . summary_of(@rec);
    Time::HiRes::sleep($LEASE + 1);     # any claim left in flight lapses
    my @mark = map { $_->log_mark } @node;
    my @twice;
    for my $k (@ok) {
        my $t = timed(($k + 1) % 2, $bodies->[$k]);
        push @twice, "$k: $t->{status} $t->{result}"
            unless "$t->{status} $t->{result}" eq '200 duplicate';
    }
    is scalar @twice, 0, 'server restarted: the ' . scalar(@ok)
        . ' deliveries answered 200 new, re-sent after the lease, are '
        . 'duplicates'
        or diag join("\n", @twice[0 .. ($#twice < 9 ? $#twice : 9)])
              . "\nerror log: " . mc_errors(\@mark);
    my $n = hand_counts();
    my @wrong = grep { ($n->{ $ids->[$_] } // 0) > 1 } 0 .. $#rec;
    is scalar @wrong, 0, 'server restarted: nothing handed off twice'
        or diag scalar(@wrong) . ' handed off twice, e.g. '
                . join ', ', map { $ids->[$_] } @wrong[0 .. 2];
}

# --- one server paused (SIGSTOP): it accepts connections and never
#     answers

{
    my ($ids, $bodies) = uniques(60, 'paused');
    my $paused;
    my @rec = burst($bodies, on_progress => sub {
        return if $paused || $_[0] < 10;
        $mc->pause(2);
        $paused = 1;
    });
    ok $paused, 'server 2 paused mid-burst';
    $mc->resume(2);
    check_exactly_once('one server paused', $ids, $bodies, \@rec);
}

# --- every server down

my ($down_ids, $down_bodies) = uniques(12, 'all down');
{
    my @before = map { status_json($_) } 0, 1;
    my @mark = map { $_->log_mark } @node;
    $mc->kill($_) for 0 .. 2;
    my @rec = map { timed($_ % 2, $down_bodies->[$_]) } 0 .. $#$down_bodies;
    is summary_of(@rec), '503 state_error x12',
        'all servers down: every delivery answered 503 state_error';
    cmp_ok max_elapsed(@rec), '<', 1.0,
        'all servers down: answered fast (max ' . max_elapsed(@rec) . ' s)';
    my $hc = hand_counts();
    is scalar(grep { ($hc->{$_} // 0) > 0 } @$down_ids), 0,
        'all servers down: nothing handed off';

    for my $n (0, 1) {
        my $log = $node[$n]->error_log_since($mark[$n]);
        like $log, qr/\[error\].*memcached/,
            "node $n: the error log names memcached";
        like $log, qr/delivery answered 503.*memcached/,
            "node $n: the error log says the delivery was answered 503";
    }

    my $t0 = Time::HiRes::time();
    my @after = map { status_json($_) } 0, 1;
    cmp_ok Time::HiRes::time() - $t0, '<', 2 * $BOUND,
        'all servers down: /status still answers fast';
    for my $n (0, 1) {
        is(($after[$n]{state}{errors} // 0) - ($before[$n]{state}{errors} // 0),
           6, "node $n: state.errors moved by its 6 refused deliveries");
        is $after[$n]{state}{servers}, 3, "node $n: /status lists 3 servers";
        cmp_ok $after[$n]{state}{out_of_ring} // 0, '>=', 1,
            "node $n: /status shows servers out of the ring "
            . '(' . ($after[$n]{state}{out_of_ring} // 'none') . ')';
    }

    my $r = $node[0]->handshake('hub.mode' => 'subscribe',
        'hub.verify_token' => $TOKEN, 'hub.challenge' => '1158201444');
    is $r->status . ' ' . $r->body, '200 1158201444',
        'all servers down: the handshake is still answered';
    $r = $node[1]->deliver($down_bodies->[0], secret => 'wrong-secret');
    is $r->status, 403, 'all servers down: a bad signature is still 403';
}

# --- every server back, on the same ports

{
    my @ports = $mc->ports;
    $mc->restart($_) for 0 .. 2;
    is_deeply [ $mc->ports ], \@ports, 'all servers restarted on their ports';
    normal_within('all servers back', 15);

    my ($done, $never) = retry_until_ok($down_bodies,
                                        [0 .. $#$down_bodies], 10);
    is scalar @$never, 0,
        'all servers back: the 12 refused deliveries, retried, accepted'
        or diag 'never: ' . join ', ', @$never;
    is join(' ', map { $done->{$_} ? $done->{$_}{result} : '-' }
                 0 .. $#$down_bodies), join(' ', ('new') x 12),
        'all servers back: and handed off as new';
    my $n = hand_counts();
    my @wrong = grep { ($n->{$_} // 0) != 1 } @$down_ids;
    is scalar @wrong, 0, 'all servers back: each handed off exactly once';
    my @rec = map { timed($_ % 2, $down_bodies->[$_]) } 0 .. $#$down_bodies;
    is summary_of(@rec), '200 duplicate x12',
        'all servers back: retried again, duplicates on either node';
}

# --- the dedupe horizon is memcached's memory: a flush or a restart loses
#     it (documented in docs/operations.md).  A delivery re-sent then IS
#     handed off again; its events carry the same event_id both times,
#     derived from Meta's ids, so the application can drop the repeat.

# Sends $body until it is answered 2xx (Meta retries a 503), at most
# $timeout seconds; returns the last "status result".
sub until_accepted {
    my ($body, $timeout) = @_;
    my ($res, $k) = ('', 0);
    wait_until(sub {
        my $t = timed($k++ % 2, $body);
        $res = "$t->{status} $t->{result}";
        $t->{status} == 200;
    }, $timeout // 10, 0.1);
    return $res;
}

{
    # fresh workers, fresh connections: this part is about memcached's
    # memory, not about the recoveries above
    ok $_->reload, 'nginx -s reload (fresh workers)' for @node;
    my ($ids, $bodies) = uniques(1, 'horizon');
    my ($id, $body) = ($ids->[0], $bodies->[0]);
    my $key = MWTest::Memcached::message_key($id);
    is until_accepted($body), '200 new', 'horizon: a delivery handed off';
    my ($v, $at) = (undef, undef);
    wait_until(sub { ($v, $at) = $mc->find($key); ($v // '') eq 'C' }, 3);
    is $v, 'C', 'horizon: its claim is committed in memcached';
    is until_accepted($body), '200 duplicate', 'horizon: re-sent: duplicate';

    ok $mc->flush, 'flush_all on every server';
    is until_accepted($body), '200 new',
        'after a flush: the old delivery is handed off AGAIN (horizon lost)';
    my @e = events_of($id);
    is scalar @e, 2, 'after a flush: the inbox has it twice';
    is $e[1]{event_id}, $e[0]{event_id},
        'after a flush: the same event_id both times';
    is $e[0]{event_id}, substr($key, 5),
        'the event_id is derived from Meta\'s message id';

    # a restart of the server holding the key: the same
    ($v, $at) = (undef, undef);
    wait_until(sub { ($v, $at) = $mc->find($key); ($v // '') eq 'C' }, 3);
    is $v, 'C', 'committed again after the re-delivery';
    SKIP: {
        skip 'the key is on no server', 3 unless defined $at;
        $mc->restart($at);
        is until_accepted($body), '200 new',
            "after a restart of server $at: handed off again (horizon lost)";
        @e = events_of($id);
        is scalar @e, 3, 'after the restart: the inbox has it a third time';
        is $e[2]{event_id}, $e[0]{event_id}, 'still the same event_id';
    }
}

for my $n (0, 1) {
    unlike $node[$n]->error_log, qr/\[(?:alert|emerg|crit)\]|exited on signal/,
        "node $n: no crash or alert in the error log";
}

done_testing;
