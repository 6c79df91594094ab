#!/usr/bin/perl
# Shared state: survives nginx -s reload (dedupe and windows), windows
# only move forward, a full zone evicts least recently used entries.

use strict;
use warnings;
use Test::More;
use lib 't/lib';
use MWTest;
use MWTest::Meta;

plan skip_all => "no module at $MODULE (run make)" unless -f $MODULE;

my ($ng, $inbox) = setup(http_conf => 'meta_webhook_state shm zone=hooks:1m;');

sub handed {
    my ($id) = @_;
    return scalar grep { ($_->{id} // '') eq $id } $inbox->events;
}

sub window_of {
    my ($m, %o) = @_;
    $inbox->clear;
    my $r = $ng->deliver(delivery(messages => [$m]), %o);
    my ($req) = $inbox->requests;
    my ($e) = grep { $_->{id} eq $m->get('id') } @{ $req->{events} // [] };
    return $e ? $e->{window}{expires_at} : undef;
}

my $T = time - 3600;

# state written before the reload
my $dup = msg_text(from => new_contact(), body => 'before reload');
my $dup_body = delivery(messages => [$dup]);
is $ng->deliver($dup_body)->header('x-mw-result'), 'new', 'before reload: new';

my $who = new_contact();
is window_of(msg_text(from => $who, ts => $T)), $T + 86400,
    'before reload: window opened';

my $status = status_update(status => 'delivered');
is $ng->deliver(delivery(statuses => [$status]))->header('x-mw-result'),
    'new', 'before reload: status new';

# --- reload with the same configuration

my @old = $ng->worker_pids;
ok $ng->reload, 'nginx -s reload: new workers up, old ones gone';
my @new = $ng->worker_pids;
ok !(grep { my $o = $_; grep { $_ == $o } @new } @old),
    'reload: every worker was replaced';

{
    my $calls = $inbox->count;
    my $r = $ng->deliver($dup_body);
    is $r->status, 200, 'after reload: 200';
    is $r->header('x-mw-result'), 'duplicate',
        'after reload: the delivery is still a duplicate';
    is $inbox->count, $calls, 'after reload: the inbox was not called';

    $r = $ng->deliver(delivery(statuses => [$status]));
    is $r->header('x-mw-result'), 'duplicate',
        'after reload: the status is still a duplicate';

    is window_of(msg_text(from => $who, ts => $T - 1000)), $T + 86400,
        'after reload: the window is remembered (an older message keeps it)';
    is window_of(msg_text(from => $who, ts => $T + 10)), $T + 10 + 86400,
        'after reload: and moves forward';
}

# --- reload into a changed configuration (a new location): same state

{
    ok $ng->reload(server_conf => $ng->{conf_opts}{server_conf}
        . "location /extra { return 204; }\n"), 'reload with a new location';
    is $ng->get('/extra')->status, 204, 'the new configuration is live';
    my $r = $ng->deliver($dup_body);
    is $r->header('x-mw-result'), 'duplicate',
        'changed configuration: still a duplicate';
    is window_of(msg_text(from => $who, ts => $T - 5)), $T + 10 + 86400,
        'changed configuration: window remembered';
}

# --- a hand-off in flight across a reload commits in the old worker

{
    my $m = msg_text(from => new_contact(), body => 'in flight over reload');
    my $d = delivery(messages => [$m]);
    $inbox->set(delay => 1.5);
    my $pid = fork;
    if (!$pid) {
        my $r = $ng->deliver($d);
        POSIX::_exit($r->status == 200 ? 0 : 1);
    }
    ok wait_until(sub { handed($m->get('id')) == 1 }, 5),
        'in flight: the inbox has it';
    ok $ng->reload, 'reload while a hand-off is in flight';
    waitpid $pid, 0;
    is $? >> 8, 0, 'in flight: the delivery was answered 200';
    $inbox->set(delay => 0);
    my $r = $ng->deliver($d);
    is $r->header('x-mw-result'), 'duplicate',
        'in flight: committed by the old worker, duplicate now';
    is handed($m->get('id')), 1, 'in flight: handed once';
}

# --- windows only move forward, per contact

{
    my $c = new_contact();
    my @seq = ([$T, $T], [$T - 500, $T], [$T + 300, $T + 300],
               [$T + 299, $T + 300], [$T + 301, $T + 301]);
    for my $s (@seq) {
        my ($ts, $want) = @$s;
        is window_of(msg_text(from => $c, ts => $ts)), $want + 86400,
            "message at T" . sprintf('%+d', $ts - $T)
            . ": window ends at T" . sprintf('%+d', $want - $T) . " + 24 h";
    }
    # non-text messages and unsupported ones open the window too
    is window_of(msg_image(from => $c, ts => $T + 400)), $T + 400 + 86400,
        'an image moves the window';
    is window_of(msg_unsupported(from => $c, ts => $T + 500)),
        $T + 500 + 86400, 'an unsupported message moves the window';
}

$ng->stop;

# --- a tiny zone: least recently used entries are evicted, with a
#     warning naming the zone; deliveries keep succeeding

{
    my ($tng, $tinbox) = setup(workers => 2,
        http_conf => 'meta_webhook_state shm zone=tiny:32k;');
    my $mark = $tng->log_mark;
    my (@bodies, @ids, @fail);
    for my $i (1 .. 400) {
        my $m = msg_text(from => new_contact(), body => "tiny $i");
        my $b = delivery(messages => [$m]);
        push @bodies, $b;
        push @ids, $m->get('id');
        my $r = $tng->deliver($b);
        push @fail, "$i: " . $r->summary
            unless $r->status == 200
                && ($r->header('x-mw-result') // '') eq 'new';
    }
    is scalar @fail, 0, '400 unique deliveries into a 32k zone: all 200 new'
        or diag join "\n", @fail[0 .. ($#fail < 4 ? $#fail : 4)];
    is $tinbox->count, 400, 'tiny zone: every delivery reached the inbox';
    my $log = $tng->error_log_since($mark);
    like $log, qr/\[warn\].*zone "tiny"/, 'tiny zone: a warning names the zone';
    unlike $log, qr/\[(?:alert|emerg|crit)\]|exited on signal/,
        'tiny zone: no crash';

    my $r = $tng->deliver($bodies[-1]);
    is $r->header('x-mw-result'), 'duplicate',
        'tiny zone: the most recent delivery is still known';
    $r = $tng->deliver($bodies[0]);
    is $r->status, 200, 'tiny zone: the oldest delivery is answered 200';
    is $r->header('x-mw-result'), 'new',
        'tiny zone: the oldest (least recently used) entry was evicted';

    # least recently USED: an entry seen again (a retry) is kept, one
    # never seen again goes first
    my $keep = delivery(messages => [ msg_text(from => new_contact()) ]);
    my $lose = delivery(messages => [ msg_text(from => new_contact()) ]);
    $tng->deliver($_) for $keep, $lose;
    my @odd;
    for my $i (1 .. 300) {
        $r = $tng->deliver(delivery(messages => [
            msg_text(from => new_contact(), body => "lru $i") ]));
        push @odd, "$i: " . $r->status unless $r->status == 200;
        if ($i % 10 == 0) {
            $r = $tng->deliver($keep);
            push @odd, "keep at $i: " . ($r->header('x-mw-result') // '-')
                unless ($r->header('x-mw-result') // '') eq 'duplicate';
        }
    }
    is "@odd", '', 'LRU: a delivery retried now and then stays a duplicate';
    is $tng->deliver($lose)->header('x-mw-result'), 'new',
        'LRU: the one never retried was evicted';

    # more claims than the zone can hold at once: answered 503 (Meta
    # retries), never 200 without a hand-off, and the zone is not wedged
    my ($big) = big_batch(n => 1000);
    $mark = $tng->log_mark;
    my $calls = $tinbox->count;
    $r = $tng->deliver($big);
    if ($r->status == 200) {
        is $tinbox->count, $calls + 1, '1000 claims in 32k: handed off';
    } else {
        is $r->status, 503, '1000 claims in 32k: 503, Meta retries';
        is $r->header('x-mw-result'), 'state_error',
            '1000 claims in 32k: result state_error';
        is $tinbox->count, $calls, '1000 claims in 32k: nothing handed off';
        like $tng->error_log_since($mark), qr/zone "tiny"|state/,
            '1000 claims in 32k: logged';
    }
    $r = $tng->deliver(delivery(messages => [ msg_text(from => new_contact()) ]));
    is $r->status, 200, 'after the oversized batch: the zone still works';
    is $r->header('x-mw-result'), 'new', 'after the oversized batch: new';
    unlike $tng->error_log, qr/\[(?:alert|emerg)\]|exited on signal/,
        'tiny zone: no crash';
    $tng->stop;
    $tinbox->stop;
}

# --- the claim lease: a worker that dies during a hand-off does not
#     leave its updates busy forever

{
    my ($lng, $linbox) = setup(workers => 1,
        extra => 'meta_webhook_claim_timeout 2s;');
    my $m = msg_text(from => new_contact(), body => 'worker dies');
    my $d = delivery(messages => [$m]);
    $linbox->set(delay => 10);
    my $pid = fork;
    if (!$pid) { $lng->deliver($d, timeout => 15); POSIX::_exit(0) }
    ok wait_until(sub { $linbox->count == 1 }, 5),
        'lease: the hand-off is in flight';
    my @w = $lng->worker_pids;
    kill 'KILL', @w;
    ok wait_until(sub {
        my @n = $lng->worker_pids;
        @n && !grep { my $x = $_; grep { $_ == $x } @w } @n
    }, 5), 'lease: the worker was killed and replaced';
    $linbox->set(delay => 0);
    my $t0 = time;
    my $r = $lng->deliver($d);
    is $r->status, 503, 'lease: right after, the update is still busy';
    is $r->header('x-mw-result'), 'busy', 'lease: result busy';
    $r = wait_until(sub {
        my $x = $lng->deliver($d);
        $x->status == 200 ? $x : undef }, 8, 0.25);
    ok $r, 'lease: once lapsed, the retry is accepted';
    is $r && $r->header('x-mw-result'), 'new', 'lease: and handed off';
    cmp_ok time - $t0, '<=', 4, 'lease: within the claim timeout';
    kill 'KILL', $pid;
    waitpid $pid, 0;
    $lng->stop;
    $linbox->stop;
}

done_testing;
