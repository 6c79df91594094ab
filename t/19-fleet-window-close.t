#!/usr/bin/perl
# A window that Meta closed stays closed across a fleet.  Node A hears
# from a contact, replies through the send path, and Meta's failed
# 131047 status for that reply (naming the recipient by another id) comes
# to node B, which finds the contact through the sent record A stored
# and closes the window.  Node A's next round reads back the contact it
# wrote for the message and finds it changed (the reply counted its
# conversation, then B closed it), so it merges its message into it
# again: that must not reopen the window.  Many times over, since what
# could go wrong is a matter of which comes first; with both nodes on
# ASCII rounds, then with node B on the binary protocol.

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

my $N = 25;

for my $binary (0, 1) {
    my $mc = MWTest::Memcached->start(3);
    my $inbox = MWTest::Inbox->start;
    my $graph = MWTest::Graph->start;
    my $how = $binary ? 'node B binary' : 'both ASCII';
    my ($A, $B) = map {
        $mc->node(inbox => $inbox, graph => $graph, workers => 2,
                  state => 'connect_timeout=2s poll_timeout=2s'
                         . ($_ == 2 && $binary ? ' protocol=binary' : ''),
                  http_extra => "    meta_webhook_conversation_limit 1000;\n")
    } 1 .. 2;

    my ($sent, $closed, $late) = (0, 0, 0);
    for my $i (1 .. $N) {
        my $c = new_contact();
        my $T = time;
        next unless $A->deliver(delivery(messages => [msg_text(from => $c,
                                  ts => $T - 5)]))->status == 200;
        my $r = graph_send($A, PNID, text_req($c, 'to be refused'));
        my $wamid = (($r->json // {})->{messages} // [{}])->[0]{id};
        next unless $r->status == 200 && $wamid;
        $sent++;
        $r = $B->deliver(delivery(statuses => [ status_update(
            status => 'failed', id => $wamid, ts => time,
            recipient_user_id => "US.$c.other", errors => [131047]) ]));
        next unless $r->status == 200;
        $r = graph_send($A, PNID, text_req($c, 'after the refusal'));
        $closed++ if $r->status == 400;
        # and still after node A's rounds have read their writes back
        select undef, undef, undef, 0.02;
        $r = graph_send($B, PNID, text_req($c, 'a moment later'));
        $late++ if $r->status == 400;
    }

    is $sent, $N, "$how: $N replies sent through node A";
    is $closed, $sent, "$how: each closed by the 131047 delivered to node B";
    is $late, $sent, "$how: and still closed a moment later";

    $_->stop for $A, $B;
    $mc->stop;
    $inbox->stop;
    $graph->stop;
}

done_testing;
