#!/usr/bin/perl
# A fleet: two nginx nodes (separate instances, the same configuration,
# two workers each) sharing their state through three memcached servers,
# one inbox and one fake Graph API behind both.  Cross-node dedupe,
# sequential and concurrent; a failed hand-off on one node retried on the
# other; windows opened on one node honoured on the other (forward only),
# by the events and by the send path; opt-ins recorded for the fleet;
# one conversation pool and one limit for the fleet; nginx -s reload keeps
# the (external) state and completes deliveries in flight; nginx -t; the
# keys in memcached.

use strict;
use warnings;
use Test::More;
use lib 't/lib';
use MWTest;
use MWTest::Meta;
use MWTest::Memcached;
use MWTest::Send;

plan skip_all => "no module at $MODULE (run make)" unless -f $MODULE;
plan skip_all => "no memcached at $MWTest::Memcached::BINARY"
    unless MWTest::Memcached::available();

my $mc = MWTest::Memcached->start(3);
my $inbox = MWTest::Inbox->start;
my $graph = MWTest::Graph->start;
my $LIMIT = 6;
# Node B speaks memcached's binary protocol, node A the ASCII one (the
# default): the records are the same, so every cross-node check below
# also checks both protocols and that they share the state.  No server
# fails here: timeouts well above a busy machine's stalls keep it so.
my @node = map {
    $mc->node(inbox => $inbox, graph => $graph, workers => 2,
              state => 'connect_timeout=2s poll_timeout=2s'
                     . ($_ == 2 ? ' protocol=binary' : ''),
              http_extra => "    meta_webhook_conversation_limit $LIMIT;\n"
                          . "    meta_webhook_require_optin on;\n")
} 1 .. 2;
my ($A, $B) = @node;

# how many hand-offs carried the update with this id (and status)
sub handed {
    my ($id, $status) = @_;
    return scalar grep { ($_->{id} // '') eq $id
                         && (!defined $status
                             || ($_->{status} // '') eq $status) }
                       $inbox->events;
}

# the events handed off for this id, in order
sub events_of {
    my ($id) = @_;
    return grep { ($_->{id} // '') eq $id } $inbox->events;
}

sub text_delivery {
    my $m = msg_text(from => new_contact(), @_);
    return ($m, delivery(messages => [$m]));
}

sub result { $_[0]->status . ' ' . ($_[0]->header('x-mw-result') // '-') }

# --- the fleet is up, on memcached

for my $n (0, 1) {
    my $r = $node[$n]->get('/status');
    is $r->status, 200, "node $n: /status answers";
    my $st = $r->json // {};
    is $st->{state}{backend}, 'memcached', "node $n: state backend memcached";
    is $st->{conversations}{used}, 0,
        "node $n: conversations.used 0 (read from memcached)";
}

# --- sequential cross-node dedupe

my ($seq_m, $seq_d) = text_delivery(body => 'sequential cross-node');
{
    my $id = $seq_m->get('id');
    my $r = $A->deliver($seq_d);
    is result($r), '200 new', 'node A: first delivery handed off';
    is handed($id), 1, 'node A: the inbox has it';
    my $calls = $inbox->count;

    $r = $B->deliver($seq_d);
    is result($r), '200 duplicate', 'node B: the same delivery is a duplicate';
    is $inbox->count, $calls, 'node B: the inbox was not called';
    $r = $A->deliver($seq_d);
    is result($r), '200 duplicate', 'node A again: duplicate';
    is handed($id), 1, 'handed off once across the fleet';

    # the key in memcached: derived from Meta's id, "mw:" prefixed, no
    # space or control character, far below 250 bytes, on one server
    my ($e) = events_of($id);
    my $key = MWTest::Memcached::message_key($id);
    is "mw:d:$e->{event_id}", $key,
        'event_id is the hex of the dedupe key (deterministic from the id)';
    like $key, qr/^mw:[a-z]:[0-9a-f]+\z/, "key $key: mw: prefixed, no space";
    cmp_ok length $key, '<', 250, 'key shorter than 250 bytes';
    my ($v, $at, $n) = $mc->find($key);
    is $v, 'C', 'the claim is committed in memcached ("C")';
    is $n, 1, 'the claim lives on exactly one server';

    # a status update: per (id, status), across nodes
    my $sid = wamid();
    my $st = status_update(id => $sid, status => 'delivered');
    is result($B->deliver(delivery(statuses => [$st]))), '200 new',
        'status on node B: new';
    is result($A->deliver(delivery(statuses => [$st]))), '200 duplicate',
        'the same status on node A: duplicate';
    is $mc->find(MWTest::Memcached::status_key($sid, 'delivered')), 'C',
        'status claim committed under its (id, status) key';
    my $st2 = status_update(id => $sid, status => 'read');
    is result($A->deliver(delivery(statuses => [$st2]))), '200 new',
        'a later status of the same message on node A: new';
    is handed($sid), 2, 'statuses handed once each';
}

# back to back: once a node has answered, the delivery's claims are
# settled; a copy sent to the other node right after the answer ends is a
# duplicate (committed) or handed off (released), never "busy"
{
    my @bad;
    for my $i (1 .. 40) {
        my ($m, $d) = text_delivery(body => "back to back $i");
        my $first = $node[$i % 2]->deliver($d);
        my $again = $node[1 - $i % 2]->deliver($d);
        push @bad, "$i: " . result($first) . ', then ' . result($again)
            unless result($first) eq '200 new'
                && result($again) eq '200 duplicate';
    }
    is scalar @bad, 0, '40 deliveries, each re-sent to the other node as '
        . 'soon as answered: 200 duplicate'
        or diag join "\n", @bad;

    @bad = ();
    for my $i (1 .. 10) {
        my ($m, $d) = text_delivery(body => "released, back to back $i");
        $inbox->set(status => 503);
        my $first = $node[$i % 2]->deliver($d);
        $inbox->set(status => 200);
        my $again = $node[1 - $i % 2]->deliver($d);
        push @bad, "$i: " . result($first) . ', then ' . result($again)
            unless $first->status == 503 && result($again) eq '200 new';
    }
    is scalar @bad, 0, '10 failed hand-offs, each retried on the other node '
        . 'as soon as answered: handed off'
        or diag join "\n", @bad;
}

# a batch with an old update (seen on A) and a new one, sent to B: only
# the new one is handed off
{
    my $m2 = msg_text(from => new_contact(), body => 'new in a mixed batch');
    my $calls = $inbox->count;
    my $r = $B->deliver(delivery(messages => [$seq_m, $m2]));
    is result($r), '200 new', 'mixed batch on node B: 200 new';
    my @req = $inbox->raw_requests;
    is scalar @req, $calls + 1, 'mixed batch: one hand-off';
    my $last = json_decode($req[-1]{body}) // {};
    is_deeply [ map { $_->{id} } @{ $last->{events} // [] } ],
        [ $m2->get('id') ], 'mixed batch: only the new update handed off';
}

# --- a 1000-update batch: handed off once on A; on B, a duplicate found
#     with one multi-key read instead of a round trip per update

sub mc_commands {        # the commands all servers have served so far
    my $n = 0;
    for my $i (0 .. $mc->count - 1) {
        my $st = $mc->stats($i);
        $n += ($st->{$_} // 0) for qw(cmd_get cmd_set incr_misses incr_hits
            decr_misses decr_hits delete_misses delete_hits);
    }
    return $n;
}

{
    my ($body, $ids) = big_batch(n => 1000);
    my $calls = $inbox->count;
    my $c0 = mc_commands();
    my $r = $A->deliver($body, timeout => 30);
    is result($r), '200 new', '1000-update batch on node A: 200 new';
    is $inbox->count, $calls + 1, '1000-update batch: one hand-off';
    my $last = json_decode(($inbox->raw_requests)[-1]{body}) // {};
    is scalar @{ $last->{events} // [] }, 1000,
        '1000-update batch: 1000 events handed off';
    my $c1 = mc_commands();
    $r = $B->deliver($body, timeout => 30);
    is result($r), '200 duplicate',
        'the same batch on node B: 200 duplicate, not handed off';
    is $inbox->count, $calls + 1, 'the same batch: no hand-off';
    wait_until(sub { 0 }, 0.3, 0.05);     # the commit tasks of A settle
    my $c2 = mc_commands();
    # A: a read of 2000 keys ahead, 1000 adds, 1000 contacts written,
    # 1000 commits.  B: the same read, and nothing else: no claim, and no
    # contact (its windows moved when A handed the batch off).
    note "memcached commands: batch on A " . ($c1 - $c0)
       . ", the duplicate on B " . ($c2 - $c1);
    cmp_ok $c2 - $c1, '<=', 2000 + 50,
        'the duplicate batch: one multi-key read, no claim or contact call';
}

# --- a hand-off that failed on node A is handed off when retried on B

for my $code (503, 500) {
    my ($m, $d) = text_delivery(body => "inbox says $code on A");
    my $id = $m->get('id');
    $inbox->set(status => $code);
    my $r = $A->deliver($d);
    $inbox->set(status => 200);
    is $r->status, $code, "inbox $code: node A answers $code";
    is handed($id), 1, "inbox $code: the inbox saw the try once";
    is $mc->find(MWTest::Memcached::message_key($id)), undef,
        "inbox $code: the claim was released in memcached";

    $r = $B->deliver($d);
    is result($r), '200 new', "inbox $code, retry on node B: handed off";
    is handed($id), 2, "inbox $code: the retry reached the inbox";
    my @e = events_of($id);
    is $e[1]{event_id}, $e[0]{event_id},
        "inbox $code: the same event_id both times";
    is result($A->deliver($d)), '200 duplicate',
        "inbox $code: then a duplicate on node A";
    is result($B->deliver($d)), '200 duplicate',
        "inbox $code: and on node B";
    is handed($id), 2, "inbox $code: not handed a third time";
}

# --- concurrent cross-node duplicates: each update handed once

{
    my $rounds = 20;
    my (@bad_count, @bad_new, @bad_other, @bad_later);
    for my $round (1 .. $rounds) {
        my ($m, $d) = text_delivery(body => "concurrent round $round");
        my $id = $m->get('id');
        # every other round the hand-off is slow, so the copies overlap it
        $inbox->set(delay => $round % 2 ? 0 : 0.3);
        my @res = in_parallel(4, sub {
            my $i = shift;
            my $r = $node[$i % 2]->deliver($d);
            return ($i % 2 ? 'B' : 'A') . ' ' . result($r);
        }, 20);
        $inbox->set(delay => 0);
        my $n = handed($id);
        push @bad_count, "round $round: handed $n times (@res)"
            unless $n == 1;
        my @new = grep { /^. 200 new$/ } @res;
        push @bad_new, "round $round: " . join(', ', @res)
            unless @new == 1;
        my @odd = grep { !/^. (?:200 new|200 duplicate|503 busy)$/ } @res;
        push @bad_other, "round $round: " . join(', ', @res) if @odd;
        for my $ng ($A, $B) {
            my $r = $ng->deliver($d);
            push @bad_later, "round $round: later retry " . result($r)
                unless result($r) eq '200 duplicate';
        }
    }
    is scalar @bad_count, 0,
        "concurrent copies on both nodes, $rounds rounds: the inbox got "
        . 'each update exactly once'
        or diag join "\n", @bad_count;
    is scalar @bad_new, 0, 'concurrent: exactly one copy answered 200 new'
        or diag join "\n", @bad_new;
    is scalar @bad_other, 0,
        'concurrent: the other copies answered 200 duplicate or 503 busy'
        or diag join "\n", @bad_other;
    is scalar @bad_later, 0, 'concurrent: later retries are duplicates'
        or diag join "\n", @bad_later;
}

# --- windows: opened on one node, honoured on the other, forward only

# delivers $m to $ng; returns the window.expires_at of its event
sub window_via {
    my ($ng, $m) = @_;
    my $r = $ng->deliver(delivery(messages => [$m]));
    return 'answer ' . result($r) unless $r->status == 200;
    my ($e) = events_of($m->get('id'));
    return $e ? $e->{window}{expires_at} : 'no event';
}

{
    my $T = time - 3600;
    my $c = new_contact();
    is window_via($A, msg_text(from => $c, ts => $T)), $T + 86400,
        'node A: a message at T opens the window to T + 24 h';
    is window_via($B, msg_text(from => $c, ts => $T - 500)), $T + 86400,
        'node B: an older message keeps the window opened on A';
    is window_via($B, msg_text(from => $c, ts => $T + 300)), $T + 300 + 86400,
        'node B: a newer message moves it forward';
    is window_via($A, msg_text(from => $c, ts => $T + 100)), $T + 300 + 86400,
        'node A: sees the window moved on B (an older message keeps it)';
    is window_via($A, msg_image(from => $c, ts => $T + 400)),
        $T + 400 + 86400, 'node A: an image moves it forward too';

    my $rec = MWTest::Memcached::contact_record(
        scalar $mc->find(MWTest::Memcached::contact_key(PNID, $c)));
    is $rec && $rec->{window}, $T + 400 + 86400,
        'the contact record in memcached holds the window';

    # per business number: the same contact on another number is another
    # window
    my $other = msg_text(from => $c, ts => $T - 1000);
    $B->deliver(delivery(messages => [$other], pnid => PNID2));
    my ($e) = events_of($other->get('id'));
    is $e && $e->{window}{expires_at}, $T - 1000 + 86400,
        'another business number: its own window';

    # the same contact from both nodes at once: forward only still holds
    my $c2 = new_contact();
    my @ts = map { $T + 10 * $_ } 0 .. 7;
    my @m = map { msg_text(from => $c2, ts => $_) } @ts;
    my @res = in_parallel(8, sub {
        my $i = shift;
        return $node[$i % 2]->deliver(delivery(messages => [$m[$i]]))->status;
    }, 20);
    is "@res", join(' ', (200) x 8),
        'eight messages of one contact, both nodes at once: all 200';
    # a write that lost to the other node's is written again by the next
    # round, moments after the answers
    MWTest::wait_until(sub {
        $rec = MWTest::Memcached::contact_record(
            scalar $mc->find(MWTest::Memcached::contact_key(PNID, $c2)));
        $rec && $rec->{window} == $ts[-1] + 86400
    }, 2);
    is $rec && $rec->{window}, $ts[-1] + 86400,
        'concurrent updates: the window is the latest message\'s';
    is window_via($B, msg_text(from => $c2, ts => $T)), $ts[-1] + 86400,
        'concurrent updates: a later older message sees the latest window';
}

# --- opt-in keywords: recorded for the whole fleet, in message order
#     (the contact record the module keeps, see mw_state.h), and
#     enforced by the send path of either node

{
    my $OLD = time - 2 * 86400;     # two days ago: the window is closed
    my $c = new_contact();
    my $key = MWTest::Memcached::contact_key(PNID, $c);
    my $rec = sub { MWTest::Memcached::contact_record(scalar $mc->find($key))
                    // {} };
    my $r = graph_send($B, PNID, template_req($c));
    is $r->status, 403, 'no opt-in: a template via node B is refused'
        or diag $r->summary;
    $r = $A->deliver(delivery(messages => [
        msg_text(from => $c, ts => $OLD, body => 'YES') ]));
    is $r->status, 200, 'opt-in keyword on node A: 200';
    is $rec->()->{optin}, 1, 'opt-in recorded in memcached (optin = in)';
    is $rec->()->{optin_ts}, $OLD, 'opt-in recorded at the message time';
    is((session_of({ ng => $B, path => '/graph/' }, $c) // {})->{optin}, 'in',
        'node B\'s session query: optin in');
    $r = graph_send($B, PNID, template_req($c));
    is $r->status, 200, 'opt-in on A: a template via node B is sent'
        or diag $r->summary;

    $B->deliver(delivery(messages => [
        msg_text(from => $c, ts => $OLD - 60, body => 'STOP') ]));
    is $rec->()->{optin}, 1,
        'an older STOP retried late on node B does not undo it';
    $B->deliver(delivery(messages => [
        msg_text(from => $c, ts => $OLD + 60, body => 'stop') ]));
    is $rec->()->{optin}, 2, 'a newer STOP on node B: opted out';
    is $rec->()->{window}, $OLD + 60 + 86400, 'and the window moved with it';
    $r = graph_send($A, PNID, template_req($c));
    is $r->status, 403, 'STOP on B: a template via node A is refused'
        or diag $r->summary;
}

# --- the send path: windows and one conversation pool for the fleet

{
    my $sA = { ng => $A, path => '/graph/' };
    my $sB = { ng => $B, path => '/graph/' };
    my $used0 = (status_of($A) // {})->{conversations}{used} // 0;

    # a window opened by a message on node A: node B may reply
    my $c = new_contact();
    my $ts = time - 1800;
    is $A->deliver(delivery(messages => [msg_text(from => $c, ts => $ts)]))
        ->status, 200, 'send: window opened on node A';
    my $j = session_of($sB, $c);
    ok $j && $j->{open}, 'node B\'s session query: open';
    is $j && $j->{expires_at}, $ts + 86400, 'node B\'s session query: expires_at';
    my $calls = $graph->count;
    my $r = graph_send($B, PNID, text_req($c, 'reply from node B'));
    is $r->status, 200, 'a reply via node B is sent' or diag $r->summary;
    $r = graph_send($A, PNID, text_req($c, 'reply from node A'));
    is $r->status, 200, 'a reply via node A is sent' or diag $r->summary;
    is $graph->count, $calls + 2, 'both replies reached Meta';
    is((status_of($A) // {})->{conversations}{used}, $used0 + 1,
        'one session answered from both nodes: one conversation (node A)');
    is((status_of($B) // {})->{conversations}{used}, $used0 + 1,
        'the same count on node B');
    ok((session_of($sA, $c) // {})->{conversation_counted},
        'node A\'s session query: conversation counted');

    # a contact who never wrote: refused on both nodes, Meta not called
    my $quiet = new_contact();
    $calls = $graph->count;
    for my $ng ($A, $B) {
        $r = graph_send($ng, PNID, text_req($quiet, 'unsolicited'));
        is $r->status, 400, 'no window: refused 400' or diag $r->summary;
        is(($r->json // {})->{error}{code}, 131047, 'no window: code 131047');
    }
    is $graph->count, $calls, 'no window: Meta not called';

    # Meta's 131047 delivered to node B closes the window for node A too
    my $S = time;
    $r = $B->deliver(delivery(statuses => [ status_update(status => 'failed',
        recipient => $c, ts => $S, errors => [131047]) ]));
    is $r->status, 200, 'a failed 131047 status delivered to node B';
    $r = graph_send($A, PNID, text_req($c, 'after 131047'));
    is $r->status, 400, 'after 131047 on B: a free-form reply via A refused'
        or diag $r->summary;

    # a message from before the refusal, delivered late to node A: the
    # window stays closed for both nodes
    is $A->deliver(delivery(messages => [msg_text(from => $c,
        ts => $S - 30, body => 'late')]))->status, 200,
        'a message older than the 131047, delivered late to node A';
    for my $ng ($A, $B) {
        $r = graph_send($ng, PNID, text_req($c, 'after the late message'));
        is $r->status, 400,
            'a message older than the 131047 does not reopen the window'
            or diag $r->summary;
    }

    # A 131047 that names its recipient otherwise (a business-scoped id)
    # still closes the window of the contact the message was sent to:
    # node A recorded the message id in memcached, node B looks it up.
    my $c3 = new_contact();
    is $A->deliver(delivery(messages => [msg_text(from => $c3)]))->status,
        200, 'sent record: the contact wrote to node A';
    $r = graph_send($A, PNID, text_req($c3, 'to be refused by Meta'));
    is $r->status, 200, 'sent record: a reply via node A is sent'
        or diag $r->summary;
    my $wamid = (($r->json // {})->{messages} // [{}])->[0]{id};
    ok $wamid, 'sent record: Meta\'s message id';
    $r = $B->deliver(delivery(statuses => [ status_update(status => 'failed',
        id => $wamid, recipient_user_id => 'US.' . $c3 . '.other',
        ts => time, errors => [131047]) ]));
    is $r->status, 200, 'sent record: its failed 131047 status, naming '
        . 'the recipient by another id, delivered to node B';
    $r = graph_send($A, PNID, text_req($c3, 'after the refusal'));
    is $r->status, 400, 'sent record: the window of the contact it was '
        . 'sent to is closed (a free-form reply via A refused)'
        or diag $r->summary;

    # the monthly limit is the fleet's: sessions opened and answered on
    # alternating nodes, up to one below the limit
    my $used = (status_of($A) // {})->{conversations}{used} // 0;
    my @got;
    for my $k (1 .. $LIMIT - $used - 1) {
        my $who = new_contact();
        my ($in, $out) = $k % 2 ? ($A, $B) : ($B, $A);
        $in->deliver(delivery(messages => [msg_text(from => $who)]));
        $r = graph_send($out, PNID, text_req($who, "limit $k"));
        push @got, $r->status;
    }
    is "@got", join(' ', (200) x ($LIMIT - $used - 1)),
        'sessions answered across both nodes up to one below the limit';

    # The last conversation of the period: one session, replies from both
    # nodes at once.  Each must see that another is counting it; one that
    # counted on its own would find the limit reached and answer 429.
    my $sess = new_contact();
    is $B->deliver(delivery(messages => [msg_text(from => $sess)]))->status,
        200, 'concurrent replies: the contact wrote to node B';
    $graph->set(delay => 0.2);
    my @res = in_parallel(8, sub {
        graph_send($node[$_[0] % 2], PNID, text_req($sess, "c $_[0]"))->status
    }, 20);
    $graph->set(delay => 0);
    is "@res", join(' ', (200) x 8),
        'eight concurrent replies in the last session from both nodes: '
        . 'all sent';
    is((status_of($A) // {})->{conversations}{used}, $LIMIT,
        "concurrent replies counted once: node A: used $LIMIT");
    is((status_of($B) // {})->{conversations}{used}, $LIMIT,
        "node B: used $LIMIT");
    my $rec = MWTest::Memcached::contact_record(scalar $mc->find(
        MWTest::Memcached::contact_key(PNID, $sess))) // {};
    is $rec->{pending}, 0, 'memcached: no count left pending';
    cmp_ok $rec->{counted} // 0, '>=', $rec->{session} // 1,
        'memcached: the session is marked counted';

    # over the limit, on either node
    for my $n ($B, $A) {
        my $who = new_contact();
        $n == $A ? $B->deliver(delivery(messages => [msg_text(from => $who)]))
                 : $A->deliver(delivery(messages => [msg_text(from => $who)]));
        $r = graph_send($n, PNID, text_req($who, 'over the limit'));
        is $r->status, 429, 'over the limit: node ' . ($n == $A ? 'A' : 'B')
            . ' refuses';
    }
    # a session counted before the limit was reached still gets replies
    $r = graph_send($B, PNID, text_req($sess, 'still in the session'));
    is $r->status, 200, 'at the limit: a counted session still gets replies'
        or diag $r->summary;
}

# --- nginx -s reload: the state is external, deliveries in flight finish

{
    my @old = $A->worker_pids;
    ok $A->reload, 'node A: nginx -s reload';
    my @new = $A->worker_pids;
    ok !(grep { my $o = $_; grep { $_ == $o } @new } @old),
        'node A: every worker replaced';
    is result($A->deliver($seq_d)), '200 duplicate',
        'after the reload: an old delivery is still a duplicate on A';

    my $c = new_contact();
    my $T = time - 1200;
    is window_via($B, msg_text(from => $c, ts => $T)), $T + 86400,
        'window opened on B';
    ok $B->reload, 'node B: nginx -s reload';
    is window_via($A, msg_text(from => $c, ts => $T - 1)), $T + 86400,
        'after both reloads: the window is remembered';

    # a hand-off in flight across a reload completes and commits
    my ($m, $d) = text_delivery(body => 'in flight over a reload');
    my $id = $m->get('id');
    $inbox->set(delay => 1.5);
    my $pid = fork;
    die "fork: $!" unless defined $pid;
    if (!$pid) {
        my $r = $A->deliver($d);
        POSIX::_exit(result($r) eq '200 new' ? 0 : 1);
    }
    ok wait_until(sub { handed($id) == 1 }, 5), 'in flight: the inbox has it';
    ok $A->reload, 'node A: reload while a hand-off is in flight';
    my $done = wait_until(sub { waitpid($pid, POSIX::WNOHANG()) == $pid }, 10);
    if (!$done) { kill 'KILL', $pid; waitpid $pid, 0 }
    is $? >> 8, 0, 'in flight: the delivery was answered 200 new';
    $inbox->set(delay => 0);
    is result($B->deliver($d)), '200 duplicate',
        'in flight: committed, a duplicate on node B';
    is result($A->deliver($d)), '200 duplicate',
        'in flight: and on node A\'s new workers';
    is handed($id), 1, 'in flight: handed once';
}

# --- nginx -t

{
    my $ng = MWTest::Nginx->new;
    $ng->write_file('access_token', "EAAtesttoken\n");
    my $state = 'meta_webhook_state memcached ' . $mc->servers
              . ' connect_timeout=200ms poll_timeout=250ms dead_timeout=5s;';
    my ($rc, $out) = $ng->test_config(
        http_conf => $state,
        server_conf => webhook_location(secret => '%SECRET_FILE%')
            . "location /graph/ {\n    meta_webhook_send;\n"
            . "    meta_webhook_access_token_file %DIR%/conf/access_token;\n"
            . "    meta_webhook_graph_url http://127.0.0.1:9/v23.0;\n}\n"
            . "location = /status {\n    meta_webhook_status;\n}\n");
    is $rc, 0, 'nginx -t: webhook, send path and status with memcached state'
        or diag $out;

    for my $bad ('meta_webhook_state memcached;',
                 'meta_webhook_state memcached 127.0.0.1;',
                 'meta_webhook_state memcached 127.0.0.1:11211 '
                 . 'poll_timeout=soon;',
                 'meta_webhook_state memcached 127.0.0.1:11211 '
                 . 'dead_timeout=0;') {
        ($rc, $out) = $ng->test_config(http_conf => $bad,
            server_conf => webhook_location(secret => '%SECRET_FILE%'));
        isnt $rc, 0, "nginx -t refuses: $bad";
        like $out, qr/\[emerg\].*(?:memcached|invalid)/,
            "nginx -t: $bad: a clear message" or diag $out;
    }
}

# --- the counters stay per node

{
    my @st = map { $_->get('/status')->json // {} } $A, $B;
    cmp_ok $st[0]{deliveries}{received}, '>', 0, 'node A counted deliveries';
    cmp_ok $st[1]{deliveries}{received}, '>', 0, 'node B counted deliveries';
    is $st[0]{state}{errors} + $st[1]{state}{errors}, 0,
        'no state errors while every server is up';
}

# --- templates racing for the period's last conversations from both
#     nodes: memcached's incr decides, exactly the limit is sent
#     (memcached is flushed first, so the period starts again at 0)

{
    ok $mc->flush, 'memcached flushed: the period counts from 0 again';
    is((status_of($A) // {})->{conversations}{used}, 0, 'used 0 after flush');
    my $OLD = time - 2 * 86400;     # opted in two days ago: window closed
    my @who = map { new_contact() } 1 .. 2 * $LIMIT;
    for my $k (0 .. $#who) {
        $node[$k % 2]->deliver(delivery(messages => [
            msg_text(from => $who[$k], ts => $OLD, body => 'YES') ]));
    }
    my $n0 = $graph->count;
    $graph->set(delay => 0.1);
    my @res = in_parallel(scalar @who, sub {
        graph_send($node[$_[0] % 2], PNID, template_req($who[$_[0]]))->status
    }, 20);
    $graph->set(delay => 0);
    is scalar(grep { $_ == 200 } @res), $LIMIT,
        2 * $LIMIT . " concurrent templates from both nodes, limit $LIMIT: "
        . "$LIMIT sent" or diag "@res";
    is scalar(grep { $_ == 429 } @res), $LIMIT, "the other $LIMIT: 429"
        or diag "@res";
    is $graph->count - $n0, $LIMIT, 'Meta got exactly the sends counted';
    is((status_of($A) // {})->{conversations}{used}, $LIMIT,
        "node A: used $LIMIT");
    is((status_of($B) // {})->{conversations}{used}, $LIMIT,
        "node B: used $LIMIT");
}

# --- a counter memcached rewrote with fewer digits: incr and decr work
#     in place and pad the shorter value with spaces ("106" less 100 is
#     "6  "); both protocols read it as the number it is (today's count
#     is at most the daily cap of 50, so it always loses digits here)

{
    my $st = status_of($A) // {};
    my $today = $st->{conversations}{business_initiated_today} // -1;
    cmp_ok $today, '>', 0, "business-initiated today: $today";
    my $key = 'mw:n:' . MWTest::Memcached::key_hex('n', 'day',
        ($st->{conversations}{day_resets_at} // 0) - 86400);
    my (undef, $at) = $mc->find($key);
    ok defined $at, 'the day counter is in memcached' or diag $key;
    $at //= 0;
    is $mc->command($at, "incr $key 100", qr/\r\n\z/),
        ($today + 100) . "\r\n", 'incr by 100 on the server';
    is $mc->command($at, "decr $key 100", qr/\r\n\z/), "$today\r\n",
        'decr by 100 on the server';
    like $mc->get($at, $key) // '', qr/^$today +\z/,
        'memcached padded the value with spaces';
    for my $n (0, 1) {
        is((status_of($node[$n]) // {})->{conversations}
               {business_initiated_today}, $today,
           "node $n reads the padded counter as $today");
    }
}

for my $n (0, 1) {
    unlike $node[$n]->error_log,
        qr/\[(?:alert|emerg|crit)\]|exited on signal|memcached \w+ failed/,
        "node $n: no crash, alert or memcached failure in the error log";
}

done_testing;
