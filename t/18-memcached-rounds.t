#!/usr/bin/perl
# The memcached backend's rounds, seen on the wire: one nginx node (ASCII,
# one worker) talks to one memcached through a proxy that logs every
# command and can step in between two of them (t/lib/MWTest/McProxy.pm).
#
#   - a delivery's claim is an add sent without waiting ("noreply"), read
#     back with its contact in one multi-key get; the contact is a cas
#     sent the same way, and the delivery is answered; the next round
#     reads the contact back, and the claim (whether its lease lapsed)
#     before its commit, a set sent the same way;
#   - another writer changes the contact between the module's read and
#     its cas: the cas is lost (memcached's cas_badval), the next round's
#     read-back shows it, and the contact is written again on top of the
#     other writer's record, nothing of either lost; lost twice, the
#     gets/cas loop;
#   - the round's read fails (its connection is cut): the round is done
#     one by one, finds the claims it added to be its own, and hands the
#     update off once;
#   - concurrent copies of one update on one node: one handed off, the
#     rest duplicates or busy;
#   - a hand-off that outlasts the claim's lease: the lapsed warning;
#   - a round's claims leave with its get in one TCP segment, its
#     contacts in another (corked).

use strict;
use warnings;
use Test::More;
use lib 't/lib';
use MWTest;
use MWTest::Meta;
use MWTest::Memcached;
use MWTest::McProxy;

plan skip_all => "no module at $MODULE (run make)" unless -f $MODULE;
plan skip_all => "no memcached at $MWTest::Memcached::BINARY"
    unless MWTest::Memcached::available();

my $mc = MWTest::Memcached->start(1);
my $px = MWTest::McProxy->start($mc->port(0));
my $inbox = MWTest::Inbox->start;
my $ng = $mc->node(inbox => $inbox, workers => 1,
                   servers => '127.0.0.1:' . $px->port,
                   state => 'connect_timeout=2s poll_timeout=2s');

sub result { $_[0]->status . ' ' . ($_[0]->header('x-mw-result') // '-') }

sub handed {
    my ($id) = @_;
    return scalar grep { ($_->{id} // '') eq $id } $inbox->events;
}

sub record {
    my ($contact) = @_;
    return MWTest::Memcached::contact_record(scalar $mc->find(
        MWTest::Memcached::contact_key(PNID, $contact))) // {};
}

sub cas_badval { $mc->stats(0)->{cas_badval} // 0 }

# the commands seen since mark $n (a count of lines), with keys named
sub since {
    my ($n, %name) = @_;
    my @c = ($px->commands)[$n .. scalar($px->commands) - 1];
    for (@c) {
        my $line = $_;
        $line =~ s/\Q$name{$_}\E/$_/g for keys %name;
        $_ = $line;
    }
    return @c;
}

# --- one new delivery, command by command

my $T = time - 3600;
my $c = new_contact();
my $m = msg_text(from => $c, ts => $T);
my $d = MWTest::Memcached::message_key($m->get('id'));
my $k = MWTest::Memcached::contact_key(PNID, $c);
my $mark = () = $px->commands;

is result($ng->deliver(delivery(messages => [$m]))), '200 new',
    'a new delivery: 200 new';
ok MWTest::wait_until(sub { ($mc->find($d) // '') eq 'C' }, 5),
    'its claim is committed';
my @cmds = grep { !/^(?:version|stats)/ } since($mark, D => $d, K => $k);
note "commands: @cmds";
like $cmds[0] // '', qr/^add D 0 \d+ 17 noreply$/,
    'the claim: an add, its answer not awaited';
like $cmds[1] // '', qr/^gets? (?:D K|K D)$/,
    'then one multi-key get of the claim and the contact';
like $cmds[2] // '', qr/^add K 0 \d+ \d+ noreply$/,
    'a new contact: an add, its answer not awaited (then the answer)';
my @later = @cmds[3 .. $#cmds];
ok scalar(grep { /^gets? (?:\S+ )*K(?: \S+)*$/ } @later),
    'the next round reads the contact back';
my ($set) = grep { $later[$_] =~ /^set D / } 0 .. $#later;
like $later[$set // 0] // '', qr/^set D 0 \d+ 1 noreply$/,
    'the commit: a set of "C", its answer not awaited';
ok defined($set) && scalar(grep { /^gets? (?:\S+ )*D(?: \S+)*$/ }
                           @later[$set + 1 .. $#later]),
    'then the claim read back: memcached has the commit';
# (the read-back may go out on another thread's connection and reach
# memcached before the add: memcached orders each connection's commands
# only; the contact is then written once more, the same record)
is scalar(grep { /^(?:cas|set|add|delete|incr|decr|replace|append)/
                 && !/^(?:cas|add) K / && !/^set D / } @later), 0,
    'nothing else written';
is scalar(grep { /^set D / } @later), 1, 'one commit';
is record($c)->{window}, $T + 86400, 'the window: T + 24 h';

# the contact exists now: the next message of it is a cas

$m = msg_text(from => $c, ts => $T + 60);
$mark = () = $px->commands;
is result($ng->deliver(delivery(messages => [$m]))), '200 new',
    'the next message: 200 new';
@cmds = since($mark, K => $k);
ok scalar(grep { /^cas K 0 \d+ \d+ \d+ noreply$/ } @cmds),
    'a known contact: a cas with the value just read, not awaited';
is record($c)->{window}, $T + 60 + 86400, 'the window moved forward';

# --- another writer between the read and the cas

# until the proxy has seen no command for 0.2 s: the rounds of what came
# before (read-backs, commits) are done
sub quiet {
    my $n = -1;
    MWTest::wait_until(sub {
        my $now = () = $px->commands;
        return 1 if $now == $n;
        $n = $now;
        return 0;
    }, 5, 0.2);
}

sub lost_cas {
    my ($times, $ts) = @_;
    quiet();
    my $r0 = record($c);
    # the other writer: an opt-in, at a time before the messages
    my $other = join ' ', $r0->{window}, $r0->{session}, 0, 1, $T - 100;
    $px->before_cas($k, $other, $times);
    my $bad0 = cas_badval();
    my $msg = msg_text(from => $c, ts => $ts);
    my $mark = () = $px->commands;
    my $res = result($ng->deliver(delivery(messages => [$msg])));
    my $ok = MWTest::wait_until(sub {
        my $r = record($c);
        ($r->{window} // 0) == $ts + 86400 && !$px->armed
    }, 5);
    my $r = record($c);
    return ($res, $ok, cas_badval() - $bad0, $r, [since($mark, K => $k)],
            $msg);
}

{
    my ($res, $ok, $lost, $r, $cmds, $msg) = lost_cas(1, $T + 600);
    is $res, '200 new', 'a cas lost to another writer: still 200 new';
    # (more when a read-back of the round before meets the other writer
    # too, and writes again: the same record)
    cmp_ok $lost, '>=', 1, 'memcached refused the module\'s cas';
    ok $ok, 'the message is in the record: the next round read it back'
        . ' and wrote it again'
        or diag explain $r;
    is "$r->{optin} $r->{optin_ts}", '1 ' . ($T - 100),
        'and so is the other writer\'s opt-in';
    note "commands: @$cmds";
    cmp_ok scalar(grep { /^cas K 0 \d+ \d+ \d+ noreply$/ } @$cmds), '>=', 2,
        'the contact written again, pipelined';
    # one cas lost: no gets/cas loop.  When a read-back on another
    # connection reached memcached before the held cas and its rewrite
    # was lost as well (two lost), the loop's one awaited cas follows.
    cmp_ok scalar(grep { /^cas K 0 \d+ \d+ \d+$/ } @$cmds), '<=',
        $lost >= 2 ? 1 : 0,
        "no plain cas unless lost twice (lost $lost): the gets/cas loop "
        . 'ran only if needed';
    is handed($msg->get('id')), 1, 'handed off once';
}

{
    my ($res, $ok, $lost, $r, $cmds) = lost_cas(2, $T + 900);
    is $res, '200 new', 'two cas lost in a row: still 200 new';
    cmp_ok $lost, '>=', 2, 'memcached refused the pipelined cas twice';
    ok $ok, 'the message is in the record' or diag explain $r;
    note "commands: @$cmds";
    ok scalar(grep { /^cas K 0 \d+ \d+ \d+$/ } @$cmds),
        'the third try is the gets/cas loop, its answer awaited';
    is "$r->{optin} $r->{optin_ts}", '1 ' . ($T - 100),
        'the other writer\'s opt-in kept';
}

# --- a round's commands leave corked: the claims with the get, the
#     contacts together (the proxy counts the TCP segments of each read)

{
    quiet();
    my @ms = map { msg_text(from => new_contact(), ts => $T) } 1 .. 4;
    my %name;
    for my $i (0 .. $#ms) {
        $name{"D$i"} = MWTest::Memcached::message_key($ms[$i]->get('id'));
        $name{"K$i"} = MWTest::Memcached::contact_key(PNID,
                           $ms[$i]->get('from'));
    }
    my $mark = () = $px->reads;
    is result($ng->deliver(delivery(messages => \@ms))), '200 new',
        'a batch of four messages of four new contacts: 200 new';
    my @reads = ($px->reads)[$mark .. scalar($px->reads) - 1];
    for my $r (@reads) {
        for my $line (@{ $r->[1] }) {
            $line =~ s/\Q$name{$_}\E/$_/g for keys %name;
        }
    }
    note 'reads: ', join ' / ', map { "$_->[0]: @{ $_->[1] }" } @reads;
    my @claims = grep { grep { /^add D\d / } @{ $_->[1] } } @reads;
    my @lines = map { @{ $_->[1] } } @claims;
    is scalar(@claims), 1, 'its four claims came in one read';
    is scalar(grep { /^add D\d 0 \d+ 17 noreply$/ } @lines), 4,
        'all four adds';
    like $lines[-1] // '', qr/^gets? (?:\S+ )*D0(?: \S+)*$/,
        'the get that reads them back last, in the same read';
    is $claims[0][0], 1, 'carried by one TCP segment: the round was corked';
    # the round's own writes, in the first read that has any: the next
    # round, which reads them back, may run on another thread, and so on
    # another connection, and reach memcached before they do (a busy
    # machine); it then adds them again, later, which is what it is for
    my @contacts = grep { grep { /^add K\d / } @{ $_->[1] } } @reads;
    is scalar(grep { /^add K\d / } @{ ($contacts[0] // [0, []])->[1] }), 4,
        'its four new contacts came in one read';
    is $contacts[0][0] // 0, 1, 'one TCP segment';
}

# --- the round's read fails: one by one, the claim found to be ours

{
    my $m2 = msg_text(from => new_contact(), ts => $T);
    my $d2 = MWTest::Memcached::message_key($m2->get('id'));
    $px->cut_next_get;
    my $log = $ng->log_mark;
    is result($ng->deliver(delivery(messages => [$m2]))), '200 new',
        'the round\'s get cut: 200 new all the same';
    ok !$px->armed, 'the get was cut';
    is handed($m2->get('id')), 1, 'handed off once';
    ok MWTest::wait_until(sub { ($mc->find($d2) // '') eq 'C' }, 5),
        'and committed';
    is result($ng->deliver(delivery(messages => [$m2]))), '200 duplicate',
        'a retry: 200 duplicate';
    is handed($m2->get('id')), 1, 'not handed off again';
    unlike $ng->error_log_since($log), qr/\[(?:alert|crit|emerg)\]/,
        'nothing worse than an error logged';
}

# --- concurrent copies of one update on one node: gathered into rounds

{
    my $m3 = msg_text(from => new_contact(), ts => $T);
    my $body = delivery(messages => [$m3]);
    $inbox->set(delay => 0.2);
    my @res = MWTest::in_parallel(8, sub { result($ng->deliver($body)) }, 20);
    $inbox->set(delay => 0);
    is scalar(grep { $_ eq '200 new' } @res), 1,
        'eight copies at once: one 200 new'
        or diag "@res";
    is scalar(grep { !/^(?:200 new|200 duplicate|503 busy)$/ } @res), 0,
        'the others 200 duplicate or 503 busy'
        or diag "@res";
    is handed($m3->get('id')), 1, 'handed off once';
}

# --- a hand-off that outlasts the claim's lease: the commit, sent without
#     reading the claim first, is told lapsed by the time

{
    my $short = $mc->node(inbox => $inbox, workers => 1,
                          servers => '127.0.0.1:' . $px->port,
                          state => 'connect_timeout=2s poll_timeout=2s',
                          webhook_extra => 'meta_webhook_claim_timeout 1s;');
    my $m4 = msg_text(from => new_contact(), ts => $T);
    my $d4 = MWTest::Memcached::message_key($m4->get('id'));
    my $log = $short->log_mark;
    $inbox->set(delay => 2.5);
    is result($short->deliver(delivery(messages => [$m4]))), '200 new',
        'a hand-off of 2.5 s with a lease of 1 s: 200 new';
    $inbox->set(delay => 0);
    like $short->wait_error_log(qr/handed off after their claims lapsed/,
                                $log),
        qr/\[warn\].*1 updates were handed off after their claims lapsed/,
        'the lapsed warning, counted once';
    ok MWTest::wait_until(sub { ($mc->find($d4) // '') eq 'C' }, 5),
        'committed all the same';
    unlike $ng->error_log, qr/claims lapsed/,
        'hand-offs within their lease: no lapsed warning';
    $short->stop;
}

done_testing;
