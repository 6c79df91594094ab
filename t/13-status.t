#!/usr/bin/perl
# meta_webhook_status: every counter moves as it should, and only the
# counters that should: deliveries, signatures, handshakes, duplicates,
# supported / quarantined / unsupported by reason, statuses, opt-ins;
# sends, refusals by reason, Meta's errors by code, timeouts, failures,
# rollbacks; the conversations.

use strict;
use warnings;
use Test::More;
use lib 't/lib';
use MWTest;
use MWTest::Meta;
use MWTest::Send;

plan skip_all => "no module at $MODULE (run make)" unless -f $MODULE;

# /t1/ (a 1 s Graph timeout) and /down/ (a refused port) from fault_setup
my $s = fault_setup(limit => 3, optin => 'on',
                    accounts => join(' ', WABA_ID, PNID, PNID2));
my ($ng, $g, $inbox) = @{$s}{qw(ng graph inbox)};

# what is not a counter
my $SKIP = qr/^conversations\.(?:period_resets_at|day_resets_at|limit|daily_limit)$|^state\.(?:backend|entries)$/;

# Runs $code and checks that the counters moved by exactly %$want and
# nothing else did.  Returns the status after.
sub moves {
    my ($name, $want, $code) = @_;
    my $before = status_of($s);
    $code->();
    my $after = status_of($s);
    ok $before && $after, "$name: /status answers JSON" or return $after;
    my $d = delta($before, $after, $SKIP);
    is_deeply $d, $want, "$name: counters moved by exactly this"
        or diag 'moved: ' . json_encode($d) . "\nwanted: " . json_encode($want);
    return $after;
}

# --- the status location itself

{
    my $r = $ng->get('/status');
    is $r->status, 200, '/status: 200';
    like $r->header('content-type') // '', qr{^application/json\b},
        '/status: application/json';
    my $j = $r->json;
    ok ref $j eq 'HASH', '/status: a JSON object';
    for my $k (qw(state deliveries handshakes updates messages sends
                  conversations)) {
        ok ref $j->{$k} eq 'HASH', "/status: has $k";
    }
    for my $k (qw(received accepted refused graph_timeouts graph_failures
                  conversations_rolled_back graph_errors)) {
        ok exists $j->{sends}{$k}, "/status: sends.$k";
    }
    for my $k (qw(invalid forbidden window_closed conversation_limit
                  daily_limit optin state)) {
        ok exists $j->{sends}{refused}{$k}, "/status: sends.refused.$k";
    }
    for my $k (qw(used limit period_resets_at business_initiated_today
                  daily_limit day_resets_at)) {
        ok exists $j->{conversations}{$k}, "/status: conversations.$k";
    }
    is $j->{conversations}{limit}, 3, '/status: the configured limit';
    my $all = flat_status($j);
    my @zero = grep { !/$SKIP/ && $all->{$_} =~ /^\d+$/ && $all->{$_} != 0 }
               keys %$all;
    is "@zero", '', '/status: every counter starts at 0';
    is $ng->request(method => 'POST', path => '/status', body => '{}')->status,
        405, 'POST /status: 405';
}

# --- the webhook side

my $NOW = time;
my $dup = delivery(messages => [ msg_text(from => new_contact(),
                                          ts => $NOW - 60) ]);
moves('a new text message', {
    'deliveries.received' => 1, 'updates.received' => 1,
    'updates.handed_off' => 1, 'messages.supported' => 1,
}, sub { is $ng->deliver($dup)->status, 200, 'text delivered' });

moves('the same delivery again (Meta retries)', {
    'deliveries.received' => 1, 'updates.received' => 1,
    'updates.duplicates' => 1,
}, sub { is $ng->deliver($dup)->status, 200, 'duplicate answered 200' });

moves('a batch with a repeat inside', {
    'deliveries.received' => 1, 'updates.received' => 3,
    'updates.handed_off' => 2, 'updates.duplicates' => 1,
    'messages.supported' => 2,
}, sub {
    my $m = msg_text(from => new_contact(), ts => $NOW - 50);
    my $n = msg_text(from => new_contact(), ts => $NOW - 50);
    is $ng->deliver(delivery(messages => [$m, $n, $m]))->status, 200,
        'batch with a repeat delivered';
});

moves('a quarantined message', {
    'deliveries.received' => 1, 'updates.received' => 1,
    'updates.handed_off' => 1, 'messages.quarantined' => 1,
}, sub {
    my $m = msg_text(from => new_contact(), ts => $NOW - 40,
                     body => 'my card is 4111 1111 1111 1111');
    is $ng->deliver(delivery(messages => [$m]))->status, 200,
        'quarantined delivered';
});

moves('unsupported messages, by reason', {
    'deliveries.received' => 1, 'updates.received' => 7,
    'updates.handed_off' => 7,
    'messages.unsupported.reaction' => 1,
    'messages.unsupported.deleted' => 2,
    'messages.unsupported.unsupported_attachment' => 1,
    'messages.unsupported.unsupported_type' => 3,
}, sub {
    my @m = (
        msg_reaction(from => new_contact(), ts => $NOW - 30),
        msg_revoke(from => new_contact(), ts => $NOW - 30),
        msg_image(from => new_contact(), ts => $NOW - 30,
                  mime_type => 'image/gif'),
        msg_unsupported(from => new_contact(), ts => $NOW - 30),
        msg_unknown(from => new_contact(), ts => $NOW - 30),
        msg_generic(from => new_contact(), ts => $NOW - 30,
                    type => 'hologram', object => obj(shape => 'cube')),
    );
    my $legacy = status_deleted(recipient => new_contact(), ts => $NOW - 30);
    is $ng->deliver(delivery(messages => \@m, statuses => [$legacy]))->status,
        200, 'unsupported batch delivered';
});

moves('statuses', {
    'deliveries.received' => 1, 'updates.received' => 3,
    'updates.handed_off' => 3, 'updates.statuses' => 3,
}, sub {
    my $c = new_contact();
    is $ng->deliver(delivery(statuses => [
        status_update(status => 'sent', recipient => $c),
        status_update(status => 'delivered', recipient => $c),
        status_update(status => 'failed', recipient => $c,
                      errors => [131026]),
    ]))->status, 200, 'statuses delivered';
});

my $OPTED = new_contact();
moves('opt-in and opt-out keywords', {
    'deliveries.received' => 2, 'updates.received' => 2,
    'updates.handed_off' => 2, 'messages.supported' => 2,
    'messages.optins' => 1, 'messages.optouts' => 1,
}, sub {
    open_window($s, $OPTED, ts => $NOW - 3 * 86400, body => 'YES');
    open_window($s, new_contact(), ts => $NOW - 3 * 86400, body => 'STOP');
});

moves('a delivery without a signature', {
    'deliveries.received' => 1, 'deliveries.signatures_missing' => 1,
}, sub {
    my $r = $ng->post('/webhook', delivery(messages => [msg_text()]));
    is $r->status, 401, 'unsigned: 401';
});

moves('a delivery with a wrong signature', {
    'deliveries.received' => 1, 'deliveries.signatures_refused' => 1,
}, sub {
    my $r = $ng->deliver(delivery(messages => [msg_text()]),
                         secret => 'not-the-app-secret');
    is $r->status, 403, 'wrong signature: 403';
});

moves('a handshake', { 'handshakes.received' => 1 }, sub {
    my $r = $ng->handshake('hub.mode' => 'subscribe',
        'hub.verify_token' => $TOKEN, 'hub.challenge' => '1158201444');
    is $r->status, 200, 'handshake: 200';
});

moves('a refused handshake', {
    'handshakes.received' => 1, 'handshakes.refused' => 1,
}, sub {
    my $r = $ng->handshake('hub.mode' => 'subscribe',
        'hub.verify_token' => 'wrong', 'hub.challenge' => '1158201444');
    is $r->status, 403, 'wrong verify token: 403';
});

moves('the inbox fails: released', {
    'deliveries.received' => 1, 'updates.received' => 1,
    'updates.released' => 1, 'messages.supported' => 1,
}, sub {
    $inbox->set(status => 503);
    my $r = $ng->deliver(delivery(messages => [
        msg_text(from => new_contact(), ts => $NOW - 20) ]));
    is $r->status, 503, 'inbox 503: passed to Meta, which retries';
    $inbox->set(status => 200);
});

# --- the send side

my $A = new_contact();
my $B = new_contact();
open_window($s, $A, ts => $NOW - 600);
open_window($s, $B, ts => $NOW - 600);

moves('an accepted send', {
    'sends.received' => 1, 'sends.accepted' => 1, 'conversations.used' => 1,
}, sub { is graph_send($s, PNID, text_req($A))->status, 200, 'A: sent' });

moves('an accepted reply in the same session', {
    'sends.received' => 1, 'sends.accepted' => 1,
}, sub { is graph_send($s, PNID, text_req($A))->status, 200, 'A again' });

moves('refused: invalid', {
    'sends.received' => 1, 'sends.refused.invalid' => 1,
}, sub { is graph_send($s, PNID, '{"to":')->status, 400, 'invalid: 400' });

moves('refused: forbidden (an unlisted number)', {
    'sends.received' => 1, 'sends.refused.forbidden' => 1,
}, sub {
    is graph_send($s, '106540352242999', text_req($A))->status, 403,
        'unlisted: 403';
});

moves('refused: window closed', {
    'sends.received' => 1, 'sends.refused.window_closed' => 1,
}, sub {
    is graph_send($s, PNID, text_req(new_contact()))->status, 400,
        'window closed: 400';
});

moves('refused: no opt-in', {
    'sends.received' => 1, 'sends.refused.optin' => 1,
}, sub {
    is graph_send($s, PNID, template_req(new_contact()))->status, 403,
        'no opt-in: 403';
});

moves("Meta's 131026 on a counted session (nothing to roll back)", {
    'sends.received' => 1, 'sends.graph_errors.131026' => 1,
}, sub {
    $g->set(mode => 'error', code => 131026);
    is graph_send($s, PNID, text_req($A))->status, 400, 'Meta 400 131026';
});

moves("Meta's 100 on a new session: rolled back", {
    'sends.received' => 1, 'sends.graph_errors.100' => 1,
    'sends.conversations_rolled_back' => 1,
}, sub {
    $g->set(mode => 'error', code => 100);
    is graph_send($s, PNID, text_req($B))->status, 400, 'Meta 400 100';
});

moves("Meta's 500 (code 1)", {
    'sends.received' => 1, 'sends.graph_errors.1' => 1,
}, sub {
    $g->set(mode => 'error', code => 1, status => 500);
    is graph_send($s, PNID, text_req($A))->status, 500, 'Meta 500';
});

moves("Meta's 131026 again: the same code's counter", {
    'sends.received' => 1, 'sends.graph_errors.131026' => 1,
}, sub {
    $g->set(mode => 'error', code => 131026);
    is graph_send($s, PNID, text_req($A))->status, 400, 'Meta 400 131026';
    $g->set(mode => 'ok');
});

moves('a Graph timeout', {
    'sends.received' => 1, 'sends.graph_timeouts' => 1,
}, sub {
    $g->set(delay => 1.5);
    is graph_send($s, PNID, text_req($A),
                  path => '/t1/' . PNID . '/messages')->status, 504,
        'timeout: 504';
    $g->set(delay => 0);
});

moves('the Graph unreachable', {
    'sends.received' => 1, 'sends.graph_failures' => 1,
}, sub {
    is graph_send($s, PNID, text_req($A),
                  path => '/down/' . PNID . '/messages')->status, 502,
        'unreachable: 502';
});

moves('a template to an opted-in contact (business-initiated)', {
    'sends.received' => 1, 'sends.accepted' => 1,
    'conversations.used' => 1, 'conversations.business_initiated_today' => 1,
}, sub {
    is graph_send($s, PNID, template_req($OPTED))->status, 200,
        'opted-in template: sent';
});

moves('the third conversation', {
    'sends.received' => 1, 'sends.accepted' => 1, 'conversations.used' => 1,
}, sub { is graph_send($s, PNID, text_req($B))->status, 200, 'B: sent' });

my $D = new_contact();
open_window($s, $D, ts => $NOW - 60);
moves('refused: conversation limit', {
    'sends.received' => 1, 'sends.refused.conversation_limit' => 1,
}, sub {
    is graph_send($s, PNID, text_req($D))->status, 429, 'limit: 429';
});

{
    my $st = status_of($s);
    is_deeply $st->{sends}{graph_errors}, { 131026 => 2, 100 => 1, 1 => 1 },
        'graph_errors: by Meta\'s code';
    is $st->{conversations}{used}, 3, 'conversations.used 3 of 3';
    my $sd = $st->{sends};
    my $outcomes = $sd->{accepted} + $sd->{graph_timeouts}
                 + $sd->{graph_failures};
    $outcomes += $_ for values %{ $sd->{refused} };
    $outcomes += $_ for values %{ $sd->{graph_errors} };
    is $outcomes, $sd->{received},
        'every send received ended in exactly one counted outcome';
}

# --- the daily cap, in a second server

{
    my $d = send_setup();
    my @odd;
    for my $i (1 .. 50) {
        my $r = graph_send($d, PNID, template_req(new_contact(), "p$i"));
        push @odd, "$i:" . $r->status unless $r->status == 200;
    }
    is "@odd", '', 'daily cap: 50 templates sent';
    my $before = status_of($d);
    my $r = graph_send($d, PNID, template_req(new_contact()));
    is $r->status, 429, 'daily cap: the 51st refused';
    my $after = status_of($d);
    is_deeply delta($before, $after, $SKIP),
        { 'sends.received' => 1, 'sends.refused.daily_limit' => 1 },
        'refused: daily limit, and only that moved';
    is $after->{conversations}{business_initiated_today}, 50,
        'daily cap: business_initiated_today 50';
    is $after->{conversations}{daily_limit}, 50, 'daily cap: daily_limit 50';
    no_crash($d->{ng}, 'daily cap server: no crash');
}

# --- the counters survive a reload (they live in the shared zone)

{
    my $before = status_of($s);
    ok $ng->reload, 'reload';
    my $after = status_of($s);
    is_deeply delta($before, $after, $SKIP), {},
        'after a reload: every counter kept';
}

no_crash($ng, 'no crash or alert in the error log');

done_testing;
