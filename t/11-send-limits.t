#!/usr/bin/perl
# Conversation accounting on the send path: one conversation per session
# (counted at its first business message), one per business-initiated
# template; the monthly limit; rollback when Meta refuses; the daily cap
# of an unverified business; opt-in; limits shared by workers; the
# period's reset time.

use strict;
use warnings;
use Test::More;
use lib 't/lib';
use MWTest;
use MWTest::Meta;
use MWTest::Send;
use POSIX ();

plan skip_all => "no module at $MODULE (run make)" unless -f $MODULE;

my $NOW = time;

sub used  { (status_of($_[0]) // {})->{conversations}{used} }
sub conv  { (status_of($_[0]) // {})->{conversations} // {} }
sub sends { (status_of($_[0]) // {})->{sends} // {} }
sub counted {
    my ($s, $c) = @_;
    my $j = session_of($s, $c);
    return $j ? ($j->{conversation_counted} ? 1 : 0) : 'no answer';
}
sub st { my $r = shift; $r->status . ($r->status == 200 ? '' : ' ' . $r->body) }

# ---------------------------------------------------------------------
# sessions, the monthly limit, rollback

{
    my $s = send_setup(limit => 3);
    my $g = $s->{graph};
    my $c = conv($s);
    is $c->{limit}, 3, 'status: conversations.limit 3';
    is $c->{used}, 0, 'status: nothing used at the start';

    my $a = new_contact();
    open_window($s, $a, ts => $NOW - 3600);
    is counted($s, $a), 0, 'A wrote: session not counted yet';
    my $r = graph_send($s, PNID, text_req($a, 'first reply'));
    is $r->status, 200, 'A: first reply sent' or diag $r->summary;
    is used($s), 1, 'A: the first reply of the session counts 1';
    is counted($s, $a), 1, 'A: the session query says counted';
    $r = graph_send($s, PNID, text_req($a, 'second reply'));
    is $r->status, 200, 'A: second reply sent';
    $r = graph_send($s, PNID, image_req($a));
    is $r->status, 200, 'A: an image in the session';
    $r = graph_send($s, PNID, template_req($a));
    is $r->status, 200, 'A: a template inside the open window';
    is used($s), 1, 'A: more messages in the same session count nothing';
    is conv($s)->{business_initiated_today}, 0,
        'A: a template in an open window is not business-initiated';

    # rollback: Meta refuses, the reservation is given back
    my $b = new_contact();
    open_window($s, $b, ts => $NOW - 1800);
    my $rb0 = sends($s)->{conversations_rolled_back} // 0;
    $g->set(mode => 'error', code => 131026);
    $r = graph_send($s, PNID, text_req($b, 'undeliverable'));
    is $r->status, 400, "B: Meta's 400 passed back";
    is used($s), 1, 'B: rolled back after Meta 400 (used back to 1)';
    is counted($s, $b), 0, 'B: the session is not counted after the 400';
    $g->set(mode => 'error', code => 1, status => 500);
    $r = graph_send($s, PNID, text_req($b, 'meta down'));
    is $r->status, 500, "B: Meta's 500 passed back";
    is used($s), 1, 'B: rolled back after Meta 500';
    is sends($s)->{conversations_rolled_back}, $rb0 + 2,
        'status: conversations_rolled_back counts both';

    # a business-initiated template refused by Meta: given back too
    my $t = new_contact();
    $g->set(mode => 'error', code => 100);
    $r = graph_send($s, PNID, template_req($t, 'no_such_template'));
    is $r->status, 400, 'template refused by Meta: 400 passed back';
    is used($s), 1, 'template refused by Meta: not counted';
    is conv($s)->{business_initiated_today}, 0,
        'template refused by Meta: not in the daily count';
    $g->set(mode => 'ok');

    $r = graph_send($s, PNID, text_req($b, 'now it works'));
    is $r->status, 200, 'B: sent once Meta accepts' or diag $r->summary;
    is used($s), 2, 'B: counted now';

    # a new session after the window closed (Meta's 131047, which comes
    # after the send it refuses) and reopened (the contact writes again,
    # a second later: within the clock skew allowed)
    my $S = time;
    deliver_status($s, $a, errors => [131047], ts => $S);
    my $j = session_of($s, $a);
    ok $j && !$j->{open}, 'A: the window closed (failed 131047)';
    open_window($s, $a, ts => $S + 1);
    $j = session_of($s, $a);
    ok $j && $j->{open}, 'A: the contact wrote again: open';
    is $j && $j->{session_started_at}, $S + 1, 'A: a new session started';
    ok $j && !$j->{conversation_counted}, 'A: the new session is not counted';
    $r = graph_send($s, PNID, text_req($a, 'new session'));
    is $r->status, 200, 'A: first reply of the new session';
    is used($s), 3, 'A: the new session counts again (3 of 3)';

    # the limit is reached
    my $before = $g->count;
    my $lim0 = sends($s)->{refused}{conversation_limit} // 0;
    my $d = new_contact();
    open_window($s, $d, ts => $NOW - 120);
    $r = graph_send($s, PNID, text_req($d, 'fourth conversation'));
    my $e = graph_error_is($r, 429, undef, 'D: the 4th conversation');
    like $e->{message} // '', qr/meta_webhook_conversation_limit/,
        'D: the message names meta_webhook_conversation_limit';
    my $reset = conv($s)->{period_resets_at} // 0;
    my $details = ref $e->{error_data} eq 'HASH'
                ? $e->{error_data}{details} // '' : '';
    my $iso = POSIX::strftime('%Y-%m-%d', gmtime $reset);
    ok $reset && (index($details, $reset) >= 0 || index($details, $iso) >= 0),
        "D: details say when the limit resets ($reset / $iso)"
        or diag "details: $details";
    is counted($s, $d), 0, 'D: nothing counted';
    is used($s), 3, 'D: still 3 used';

    $r = graph_send($s, PNID, template_req(new_contact()));
    is $r->status, 429, 'a business-initiated template at the limit: 429';
    is(($r->json // {})->{error}{message} =~ /conversation_limit/ ? 1 : 0, 1,
        'the template refusal names the monthly limit (not the daily cap)');
    is $g->count, $before, 'refused at the limit: Meta not called';
    is sends($s)->{refused}{conversation_limit}, $lim0 + 2,
        'status: refused.conversation_limit';

    # conversations already counted go on
    for my $who ([A => $a], [B => $b]) {
        $r = graph_send($s, PNID, text_req($who->[1], 'still talking'));
        is $r->status, 200, "$who->[0]: a reply in a counted session passes "
            . 'the reached limit' or diag $r->summary;
    }
    $r = graph_send($s, PNID, template_req($a));
    is $r->status, 200, 'A: a template in the counted session passes';
    is used($s), 3, 'still 3 used';
    no_crash($s->{ng}, 'limit 3: no crash');
}

# ---------------------------------------------------------------------
# the daily cap of an unverified business (default off)

{
    my $s = send_setup();
    my $g = $s->{graph};
    my $c = conv($s);
    is $c->{daily_limit}, 50, 'unverified: status daily_limit 50';
    my $now = time;
    ok $c->{day_resets_at} && $c->{day_resets_at} % 86400 == 0
        && $c->{day_resets_at} > $now && $c->{day_resets_at} <= $now + 86400,
        'day_resets_at is the next UTC midnight'
        or diag "day_resets_at $c->{day_resets_at}, now $now";

    my @odd;
    for my $i (1 .. 49) {
        my $r = graph_send($s, PNID, template_req(new_contact(), "promo_$i"));
        push @odd, "$i: " . st($r) unless $r->status == 200;
    }
    is "@odd", '', '49 business-initiated templates: all sent';
    $g->set(mode => 'error', code => 131026);
    my $r = graph_send($s, PNID, template_req(new_contact()));
    is $r->status, 400, 'the 50th refused by Meta';
    is conv($s)->{business_initiated_today}, 49,
        'refused by Meta: given back (49 today)';
    $g->set(mode => 'ok');
    $r = graph_send($s, PNID, template_req(new_contact(), 'promo_50'));
    is $r->status, 200, 'the 50th template: sent' or diag $r->summary;
    is conv($s)->{business_initiated_today}, 50, 'status: 50 today';

    my $before = $g->count;
    $r = graph_send($s, PNID, template_req(new_contact(), 'promo_51'));
    my $e = graph_error_is($r, 429, undef, 'the 51st business-initiated');
    like $e->{message} // '', qr/50|daily|business_verified/i,
        'the 51st: the message names the daily cap';
    my $details = ref $e->{error_data} eq 'HASH'
                ? $e->{error_data}{details} // '' : '';
    my $reset = conv($s)->{day_resets_at};
    ok index($details, $reset) >= 0
        || index($details, POSIX::strftime('%Y-%m-%d', gmtime $reset)) >= 0,
        "the 51st: details say when the cap resets ($reset)"
        or diag "details: $details";
    is $g->count, $before, 'the 51st: Meta not called';
    is sends($s)->{refused}{daily_limit}, 1, 'status: refused.daily_limit 1';
    is conv($s)->{business_initiated_today}, 50, 'still 50 today';

    # user-initiated conversations are not capped
    my $u = new_contact();
    open_window($s, $u);
    $r = graph_send($s, PNID, text_req($u, 'a reply'));
    is $r->status, 200, 'cap reached: a reply in an open window is sent'
        or diag $r->summary;
    $r = graph_send($s, PNID, template_req($u));
    is $r->status, 200, 'cap reached: a template inside an open window is sent'
        or diag $r->summary;
    is conv($s)->{business_initiated_today}, 50,
        'user-initiated: not in the daily count';
    is conv($s)->{used}, 51, 'every conversation is in used (no limit set)';
    no_crash($s->{ng}, 'daily cap: no crash');
}

{
    my $s = send_setup(verified => 'on');
    is conv($s)->{daily_limit}, 0, 'verified: status daily_limit 0 (none)';
    my @odd;
    for my $i (1 .. 51) {
        my $r = graph_send($s, PNID, template_req(new_contact(), "promo_$i"));
        push @odd, "$i: " . st($r) unless $r->status == 200;
    }
    is "@odd", '', 'verified: 51 business-initiated templates all sent';
    is $s->{graph}->count, 51, 'verified: Meta got all 51';
    $s->{ng}->stop;
    $s->{graph}->stop;
}

# ---------------------------------------------------------------------
# opt-in

{
    my $s = send_setup(optin => 'on');
    my $g = $s->{graph};
    my $OLD = $NOW - 2 * 86400;         # keywords sent two days ago: the
                                        # window is closed again

    my $none = new_contact();
    my $before = $g->count;
    my $r = graph_send($s, PNID, template_req($none));
    graph_error_is($r, 403, undef, 'opt-in required, none recorded');
    is((session_of($s, $none) // {})->{optin}, 'none', 'session: optin none');

    my %who;
    for my $kw (qw(YES START SUBSCRIBE)) {
        my $c = $who{$kw} = new_contact();
        is open_window($s, $c, ts => $OLD, body => $kw)->status, 200,
            "$kw delivered (two days ago)";
        my $j = session_of($s, $c);
        is $j && $j->{optin}, 'in', "$kw: session optin in";
        ok $j && !$j->{open}, "$kw: the window is closed";
        $r = graph_send($s, PNID, template_req($c));
        is $r->status, 200, "$kw: a template is sent" or diag $r->summary;
    }
    is $g->count, $before + 3, 'only the opted-in contacts reached Meta';

    my $y = $who{YES};
    open_window($s, $y, ts => $OLD + 100, body => 'STOP');
    my $j = session_of($s, $y);
    is $j && $j->{optin}, 'out', 'STOP: session optin out';
    $before = $g->count;
    $r = graph_send($s, PNID, template_req($y));
    my $e = graph_error_is($r, 403, undef, 'after STOP: a template');
    like $e->{message} // '', qr/STOP|opt/i, 'after STOP: the message says why';
    is $g->count, $before, 'after STOP: Meta not called';

    open_window($s, $y, ts => $OLD + 200, body => 'yes');
    is((session_of($s, $y) // {})->{optin}, 'in', 'YES again: optin in');
    $r = graph_send($s, PNID, template_req($y));
    is $r->status, 200, 'YES again: a template is sent' or diag $r->summary;

    # replies inside an open window need no opt-in
    my $w = new_contact();
    open_window($s, $w, body => 'Where is my order?');
    $r = graph_send($s, PNID, text_req($w, 'On its way'));
    is $r->status, 200, 'no opt-in, window open: a reply is sent';
    $r = graph_send($s, PNID, template_req($w));
    is $r->status, 200, 'no opt-in, window open: a template is a reply too';
    my $st = sends($s);
    is $st->{refused}{optin}, 2, 'status: refused.optin 2';
    $s->{ng}->stop;
    $s->{graph}->stop;
}

# ---------------------------------------------------------------------
# two workers, one limit

{
    my $s = send_setup(limit => 5, workers => 2);
    my $g = $s->{graph};
    my @w = $s->{ng}->worker_pids;
    is scalar @w, 2, 'two workers';
    $g->set(delay => 0.3);

    my $c = new_contact();
    open_window($s, $c);
    my @res = in_parallel(8, sub {
        my $r = graph_send($s, PNID, text_req($c, "concurrent $_[0]"));
        return $r->status . ' ' . ($r->header('x-worker') // '-');
    });
    my @ok = grep { /^200 / } @res;
    is scalar @ok, 8, '8 concurrent replies in one session: all sent'
        or diag "@res";
    is used($s), 1, '8 concurrent replies in one session: counted once';

    my @res2 = in_parallel(16, sub {
        my $r = graph_send($s, PNID, template_req(new_contact() . $_[0]));
        return $r->status . ' ' . ($r->header('x-worker') // '-');
    });
    my $accepted = grep { /^200 / } @res2;
    my $refused = grep { /^429 / } @res2;
    is $accepted, 4, '16 concurrent templates, 4 left: exactly 4 sent'
        or diag "@res2";
    is $refused, 12, '16 concurrent templates: the other 12 got 429'
        or diag "@res2";
    is $g->count, 8 + 4, 'Meta got exactly the accepted sends';
    is used($s), 5, 'used 5 of 5';
    my %by = map { (split / /)[1] => 1 } @res, @res2;
    is scalar(grep { $_ ne '-' } keys %by), 2,
        'both workers served sends (the limit really is shared)'
        or diag 'workers: ' . join ' ', keys %by;
    no_crash($s->{ng}, 'two workers: no crash');
    $s->{ng}->stop;
    $s->{graph}->stop;
}

# ---------------------------------------------------------------------
# the period: anchor_day=31, a timezone

sub days_in_month {
    my ($y, $m) = @_;                   # $m 1..12
    return 29 if $m == 2 && ($y % 4 == 0 && $y % 100 != 0 || $y % 400 == 0);
    return (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)[$m - 1];
}

{
    my $s = send_setup(limit => 10, anchor_day => 31);
    my $c = conv($s);
    is $c->{limit}, 10, 'anchor_day=31: the configuration loads, limit 10';
    my $reset = $c->{period_resets_at} // 0;
    my $now = time;
    ok $reset > $now && $reset <= $now + 31 * 86400,
        'anchor_day=31: period_resets_at within the next 31 days'
        or diag "period_resets_at $reset, now $now";
    my @t = gmtime $reset;
    my $dim = days_in_month($t[5] + 1900, $t[4] + 1);
    ok $t[0] == 0 && $t[1] == 0 && $t[2] == 0,
        'anchor_day=31: resets at 00:00:00 UTC'
        or diag scalar gmtime $reset;
    is $t[3], $dim > 31 ? 31 : $dim,
        'anchor_day=31: on the 31st, or the last day of a shorter month'
        or diag scalar gmtime $reset;
    $s->{ng}->stop;
    $s->{graph}->stop;
}
{
    my $s = send_setup(limit => 10, anchor_day => 1, timezone => '+05:30');
    my $c = conv($s);
    my $now = time;
    my $off = 5 * 3600 + 1800;
    ok $c->{day_resets_at} && ($c->{day_resets_at} + $off) % 86400 == 0
        && $c->{day_resets_at} > $now && $c->{day_resets_at} <= $now + 86400,
        'timezone +05:30: the day resets at local midnight'
        or diag "day_resets_at $c->{day_resets_at}";
    my @t = gmtime(($c->{period_resets_at} // 0) + $off);
    ok $t[3] == 1 && $t[2] == 0 && $t[1] == 0 && $t[0] == 0,
        'timezone +05:30, anchor_day=1: the period resets on the 1st, '
        . '00:00 local' or diag scalar gmtime $c->{period_resets_at};
    $s->{ng}->stop;
    $s->{graph}->stop;
}

done_testing;
