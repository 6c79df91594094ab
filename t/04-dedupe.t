#!/usr/bin/perl
# Exactly-once hand-off: duplicates dropped, failed hand-offs retried,
# concurrent copies handed once.

use strict;
use warnings;
use Test::More;
use POSIX ();
use Time::HiRes ();
use lib 't/lib';
use MWTest;
use MWTest::Meta;

plan skip_all => "no module at $MODULE (run make)" unless -f $MODULE;

my $dead_port = closed_port();      # connections refused

my ($ng, $inbox) = setup(
    server_conf => webhook_location(path => '/down', inbox => $dead_port,
                                    secret => '%SECRET_FILE%')
        . <<'EOF',
location /slow {
    client_max_body_size 4m;
    meta_webhook;
    meta_webhook_app_secret_file %SECRET_FILE%;
    proxy_set_body $meta_webhook_events;
    proxy_set_header Content-Type application/json;
    proxy_read_timeout 1s;
    proxy_pass http://127.0.0.1:%INBOX%;
    add_header X-MW-Result $meta_webhook_result always;
}
EOF
);

# how many hand-offs carried the update with this id (and status)
sub handed {
    my ($id, $status) = @_;
    my $n = 0;
    for my $e ($inbox->events) {
        next unless ($e->{id} // '') eq $id;
        next if defined $status && ($e->{status} // '') ne $status;
        $n++;
    }
    return $n;
}

sub text_delivery {
    my $m = msg_text(from => new_contact(), @_);
    return ($m, delivery(messages => [$m]));
}

# --- sequential duplicates

{
    my ($m, $d) = text_delivery(body => 'once');
    my $r = $ng->deliver($d);
    is $r->status, 200, 'first delivery: 200';
    is $r->header('x-mw-result'), 'new', 'first delivery: new';
    is handed($m->get('id')), 1, 'first delivery: handed off';
    my $calls = $inbox->count;

    for my $try (1 .. 3) {
        $r = $ng->deliver($d);
        is $r->status, 200, "repeat $try: 200";
        is $r->header('x-mw-result'), 'duplicate', "repeat $try: duplicate";
    }
    is $inbox->count, $calls, 'repeats: the inbox was not called';
    is handed($m->get('id')), 1, 'repeats: handed off once in all';

    # the same message in a different body (another batch) is a duplicate
    my $other = delivery(messages => [$m], display => '15550783881');
    my $m2 = msg_text(from => new_contact());
    my $mixed = delivery(messages => [$m, $m2]);
    $r = $ng->deliver($mixed);
    is $r->status, 200, 'mixed batch: 200';
    is $r->header('x-mw-result'), 'new', 'mixed batch: new';
    my @req = $inbox->raw_requests;
    is scalar @req, $calls + 1, 'mixed batch: one call';
    my $last = json_decode($req[-1]{body});
    is_deeply [ map { $_->{id} } @{ $last->{events} } ], [ $m2->get('id') ],
        'mixed batch: only the new update is handed off';
    is $req[-1]{headers}{'x-mw-updates'}, 2, 'mixed batch: 2 updates';
    is $req[-1]{headers}{'x-mw-new'}, 1, 'mixed batch: 1 new';
}

# the same update twice in one delivery is handed once
{
    my $m = msg_text(from => new_contact(), body => 'twice in one');
    my $r = $ng->deliver(delivery(messages => [$m, $m]));
    is $r->status, 200, 'repeat inside a delivery: 200';
    is handed($m->get('id')), 1, 'repeat inside a delivery: handed once';
}

# --- statuses: per (id, status)

{
    my $id = wamid();
    my $who = new_contact();
    my $st = sub { status_update(id => $id, recipient => $who, status => $_[0]) };
    for my $s (qw(sent delivered)) {
        my $r = $ng->deliver(delivery(statuses => [ $st->($s) ]));
        is $r->header('x-mw-result'), 'new', "status $s: new";
    }
    my $r = $ng->deliver(delivery(statuses => [ $st->('sent') ]));
    is $r->header('x-mw-result'), 'duplicate', 'status sent again: duplicate';
    $r = $ng->deliver(delivery(statuses => [ $st->('delivered'),
                                              $st->('read') ]));
    is $r->header('x-mw-result'), 'new', 'delivered + read: new';
    is handed($id, 'sent'), 1, 'sent handed once';
    is handed($id, 'delivered'), 1, 'delivered handed once';
    is handed($id, 'read'), 1, 'read handed once';
    # a failed status later for the same message is a new update
    $r = $ng->deliver(delivery(statuses => [
        status_update(id => $id, recipient => $who, status => 'failed',
                      errors => [131047]) ]));
    is $r->header('x-mw-result'), 'new', 'failed after read: new';
    is handed($id, 'failed'), 1, 'failed handed once';
}

# --- /local (no proxy): the same rules, the module answers

{
    my ($m, $d) = text_delivery(body => 'local');
    my $r = $ng->deliver($d, path => '/local');
    is $r->status, 200, '/local: 200';
    is $r->header('x-mw-result'), 'new', '/local: new';
    $r = $ng->deliver($d, path => '/local');
    is $r->header('x-mw-result'), 'duplicate', '/local: duplicate';
}

# --- a failed hand-off is answered non-2xx and the retry is handed off

for my $code (503, 500, 429) {
    my ($m, $d) = text_delivery(body => "inbox says $code");
    $inbox->set(status => $code);
    my $r = $ng->deliver($d);
    is $r->status, $code, "inbox $code: the delivery gets $code";
    is handed($m->get('id')), 1, "inbox $code: the inbox saw it once";
    my $first = (grep { $_->{id} eq $m->get('id') } $inbox->events)[0];

    $inbox->set(status => 200);
    $r = $ng->deliver($d);
    is $r->status, 200, "inbox $code, then retry: 200";
    is $r->header('x-mw-result'), 'new',
        "inbox $code, then retry: processed as new, not duplicate";
    is handed($m->get('id')), 2, "inbox $code, then retry: handed again";
    my @all = grep { $_->{id} eq $m->get('id') } $inbox->events;
    is $all[1]{event_id}, $first->{event_id},
        "inbox $code, then retry: the same event_id";

    $r = $ng->deliver($d);
    is $r->header('x-mw-result'), 'duplicate',
        "inbox $code, after success: duplicate";
    is handed($m->get('id')), 2, "inbox $code: not handed a third time";
}

# 204 is a 2xx: committed
{
    my ($m, $d) = text_delivery(body => 'inbox says 204');
    $inbox->set(status => 204, body => '');
    my $r = $ng->deliver($d);
    is $r->status, 204, 'inbox 204: passed on';
    $inbox->set(status => 200, body => '{"ok":true}');
    $r = $ng->deliver($d);
    is $r->header('x-mw-result'), 'duplicate', 'inbox 204: committed';
    is handed($m->get('id')), 1, 'inbox 204: handed once';
}

# the inbox is down: 502, then the retry reaches the inbox
{
    my ($m, $d) = text_delivery(body => 'inbox down');
    my $r = $ng->deliver($d, path => '/down');
    is $r->status, 502, 'inbox down: 502';
    $r = $ng->deliver($d, path => '/down');
    is $r->status, 502, 'inbox still down: 502 again, not duplicate';
    $r = $ng->deliver($d);
    is $r->status, 200, 'inbox back: 200';
    is $r->header('x-mw-result'), 'new', 'inbox back: new';
    is handed($m->get('id')), 1, 'inbox back: handed off';
}

# the inbox is too slow: 504, the claim is released
{
    my ($m, $d) = text_delivery(body => 'inbox slow');
    $inbox->set(delay => 2.5);
    my $r = $ng->deliver($d, path => '/slow');
    is $r->status, 504, 'inbox slower than proxy_read_timeout: 504';
    $inbox->set(delay => 0);
    $r = wait_until(sub {
        my $x = $ng->deliver($d);
        $x->status == 503 ? undef : $x;
    }, 10, 0.2);
    ok $r, 'retry after a timeout answered';
    is $r && $r->status, 200, 'retry after a timeout: 200';
    is $r && $r->header('x-mw-result'), 'new', 'retry after a timeout: new';
}

# --- concurrent identical deliveries: handed once

sub concurrent_case {
    my ($n, $label) = @_;
    my ($m, $d) = text_delivery(body => "concurrent $label");
    $inbox->set(delay => 1);
    my @res = in_parallel($n, sub {
        my $r = $ng->deliver($d);
        return $r->status . ' ' . ($r->header('x-mw-result') // '-');
    });
    $inbox->set(delay => 0);
    is handed($m->get('id')), 1, "$label: the inbox received it once"
        or diag "@res";
    my @ok = grep { /^200 new$/ } @res;
    is scalar @ok, 1, "$label: exactly one delivery handed it off"
        or diag join ', ', @res;
    my @other = grep { !/^200 new$/ } @res;
    my @bad = grep { !/^(?:200 duplicate|503 busy)$/ } @other;
    is "@bad", '', "$label: the others got 200 duplicate or 503 busy"
        or diag join ', ', @res;

    my $r = $ng->deliver($d);
    is $r->status, 200, "$label: a later retry: 200";
    is $r->header('x-mw-result'), 'duplicate', "$label: a later retry: duplicate";
    is handed($m->get('id')), 1, "$label: still handed once";
}

concurrent_case(2, 'two concurrent copies');
concurrent_case(6, 'six concurrent copies');

# A copy that finds its update in flight looks again for about 50 ms
# (5 x 10 ms) before answering busy: a hand-off that ends within that
# makes the copy a duplicate; a longer one leaves it busy.
sub copy_during {
    my ($delay, $label) = @_;
    my ($m, $d) = text_delivery(body => "copy during $label");
    $inbox->set(delay => $delay);
    my $before = $inbox->count;
    my $pid = fork;
    die "fork: $!" unless defined $pid;
    if (!$pid) {
        $ng->deliver($d, timeout => 10);
        POSIX::_exit(0);
    }
    # the first request has reached the inbox (so it holds the claim)
    # before the copy goes
    wait_until(sub { $inbox->count > $before }, 5, 0.001);
    Time::HiRes::sleep($delay / 4);
    my $t0 = Time::HiRes::time();
    my $r = $ng->deliver($d);
    my $took = Time::HiRes::time() - $t0;
    waitpid $pid, 0;
    $inbox->set(delay => 0);
    return ($r->status . ' ' . ($r->header('x-mw-result') // '-'), $took,
            handed($m->get('id')));
}
{
    my ($res, $took, $n) = copy_during(0.01, 'a short hand-off');
    is $res, '200 duplicate',
        'a copy during a 10 ms hand-off: 200 duplicate (it looked again)';
    is $n, 1, 'a copy during a 10 ms hand-off: handed off once';
    ($res, $took, $n) = copy_during(1.5, 'a long hand-off');
    is $res, '503 busy', 'a copy during a 1.5 s hand-off: 503 busy';
    cmp_ok $took, '<', 1.0,
        sprintf('a copy during a 1.5 s hand-off: answered without waiting '
                . 'for it (%.3f s)', $took);
    is $n, 1, 'a copy during a 1.5 s hand-off: handed off once';
}

# overlapping batches at the same time: {A, B} and {B, C}; retried until
# both are accepted, each update reaches the inbox exactly once
{
    my @m = map { msg_text(from => new_contact(), body => "overlap $_") } 1 .. 3;
    my @d = (delivery(messages => [ @m[0, 1] ]),
             delivery(messages => [ @m[1, 2] ]));
    $inbox->set(delay => 0.5);
    my @res = in_parallel(2, sub {
        my $i = shift;
        my @s;
        for (1 .. 30) {         # Meta retries, paced, until a 200
            my $r = $ng->deliver($d[$i]);
            push @s, $r->status;
            last if $r->status == 200;
            Time::HiRes::sleep(0.15);
        }
        return "@s";
    }, 60);
    $inbox->set(delay => 0);
    like $_, qr/\b200$/, "overlapping batch accepted in the end ($_)"
        for @res;
    is handed($_->get('id')), 1, 'overlapping batches: '
        . $_->get('id') . ' handed exactly once' for @m;
}

# concurrent copies while the inbox fails: none is lost, none doubled
{
    my ($m, $d) = text_delivery(body => 'concurrent failure');
    $inbox->set(status => 503, delay => 0.5);
    my @res = in_parallel(3, sub { $ng->deliver($d)->status });
    ok !(grep { $_ == 200 } @res), 'inbox failing: no copy got 200'
        or diag "@res";
    $inbox->set(status => 200, delay => 0);
    my $r = $ng->deliver($d);
    is $r->status, 200, 'inbox back: the retry is accepted';
    is $r->header('x-mw-result'), 'new', 'inbox back: handed as new';
    my @ok = grep { $_->{id} eq $m->get('id') } $inbox->events;
    cmp_ok scalar @ok, '>=', 2, 'the inbox saw the failed try and the retry';
    $r = $ng->deliver($d);
    is $r->header('x-mw-result'), 'duplicate', 'then: duplicate';
}

# many deliveries from 4 clients at once, overlapping and repeated, each
# retried (paced) until 200: every update reaches the inbox exactly once
{
    my $n = 60;
    my @m = map { msg_text(from => new_contact(), body => "stress $_") } 1 .. $n;
    my @d = map { delivery(messages => [ $m[$_], $m[($_ * 7 + 3) % $n] ]) }
            0 .. $n - 1;
    my $calls = $inbox->count;
    my @res = in_parallel(4, sub {
        my $i = shift;
        my @odd;
        for my $k (0 .. $n - 1) {
            my $idx = ($k + $i * 15) % $n;
            my $done = 0;
            for (1 .. 50) {
                my $r = $ng->deliver($d[$idx]);
                my $st = $r->status;
                if ($st == 200) { $done = 1; last }
                push @odd, "$idx:$st" unless $st == 503;
                Time::HiRes::sleep(0.02);
            }
            push @odd, "$idx:never" unless $done;
        }
        return "@odd";
    }, 120);
    is_deeply \@res, ['', '', '', ''],
        'stress: every delivery ended in 200, only 503 busy on the way';
    my %seen;
    $seen{ $_->{id} }++ for $inbox->events;
    my @wrong = grep { ($seen{ $_->get('id') } // 0) != 1 } @m;
    is scalar @wrong, 0, "stress: each of $n updates handed exactly once"
        or diag join ', ', map { $_->get('id') . '=' . ($seen{ $_->get('id') } // 0) } @wrong[0 .. 4];
}

unlike $ng->error_log, qr/\[(?:alert|emerg|crit)\]|exited on signal/,
    'no crash or alert in the error log';

done_testing;
