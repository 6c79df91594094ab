#!/usr/bin/perl
# Large batches (Meta sends up to 1000 updates in one delivery) and the
# variables in logs: $meta_webhook_events with escape=none, one line per
# delivery; $meta_webhook_result, $meta_webhook_updates, $meta_webhook_new.

use strict;
use warnings;
use utf8;
use Test::More;
use lib 't/lib';
use MWTest;
use MWTest::Meta;

plan skip_all => "no module at $MODULE (run make)" unless -f $MODULE;

my ($ng, $inbox) = setup(
    http_conf => "log_format mwvars '\$meta_webhook_result "
               . "\$meta_webhook_updates \$meta_webhook_new';",
    local_extra => 'access_log %DIR%/logs/vars.log mwvars;',
);

my $EVENTS_LOG = $ng->dir . '/logs/events.log';
my $VARS_LOG = $ng->dir . '/logs/vars.log';

# ids in a raw events document (JSON::PP takes seconds on 1000 events);
# each event here carries exactly one "id" member
sub ids_in { [ $_[0] =~ /"id":"(wamid\.[^"]+)"/g ] }

# the complete lines of a log, from byte $from on, waiting until there
# are at least $n of them
sub log_lines {
    my ($file, $n, $from) = @_;
    my @l;
    wait_until(sub {
        my $t = substr(slurp($file) // '', $from // 0);
        @l = $t =~ /([^\n]*)\n/g;
        @l >= $n;
    }, 5);
    return @l;
}

# --- 1000 updates in one delivery

{
    my ($body, $ids) = big_batch(n => 1000, entries => 4, changes => 5);
    my $r = $ng->deliver($body);
    is $r->status, 200, '1000 updates: 200' or diag $r->summary;
    is $r->header('x-mw-result'), 'new', '1000 updates: new';
    my @req = $inbox->raw_requests;
    is scalar @req, 1, '1000 updates: one hand-off';
    my $raw = $req[0]{body} // '';
    is_deeply ids_in($raw), $ids, '1000 updates: all handed off, in order';
    is $req[0]{headers}{'x-mw-updates'}, 1000, '$meta_webhook_updates 1000';
    is $req[0]{headers}{'x-mw-new'}, 1000, '$meta_webhook_new 1000';
    like $raw, qr/^\{"events":\[\{"kind":"message"/, 'an events document';
    like $raw, qr/\]\}\z/, 'complete';
    my $ev_count = () = $raw =~ /"kind":"message"/g;
    is $ev_count, 1000, '1000 message events';
    like $raw, qr/"body":"Message number 1000 \x{c3}\x{a9}t\x{c3}\x{a9} \/ r/,
        'the texts arrive decoded (UTF-8, "/" unescaped)';

    $r = $ng->deliver($body);
    is $r->status, 200, '1000 updates again: 200';
    is $r->header('x-mw-result'), 'duplicate', '1000 updates again: duplicate';
    is $inbox->count, 1, '1000 updates again: the inbox was not called';

    # half old, half new: only the new half, in order
    my @m;
    my @new_ids;
    my $k = 0;
    my @old = @$ids[0 .. 499];
    for my $i (0 .. 999) {
        if ($i % 2 == 0) {
            push @m, msg_text(id => shift @old, from => new_contact(),
                              body => 'old');
        } else {
            my $id = wamid();
            push @new_ids, $id;
            push @m, msg_text(id => $id, from => new_contact(), body => 'new');
        }
    }
    $inbox->clear;
    $r = $ng->deliver(delivery(messages => \@m));
    is $r->status, 200, 'half duplicates: 200';
    my ($req) = $inbox->raw_requests;
    is_deeply ids_in($req->{body} // ''), \@new_ids,
        'half duplicates: exactly the 500 new, in order';
    is $req->{headers}{'x-mw-updates'}, 1000, 'half duplicates: 1000 updates';
    is $req->{headers}{'x-mw-new'}, 500, 'half duplicates: 500 new';
}

# messages and statuses across entries and changes, in order
{
    my (@entries, @want);
    for my $e (1 .. 5) {
        my @changes;
        for my $c (1 .. 4) {
            my @m = map { msg_image(from => new_contact()) } 1 .. 30;
            my @s = map { status_update(status => (qw(sent delivered read))[$_ % 3]) } 1 .. 20;
            push @want, map { $_->get('id') } @m, @s;
            push @changes, { messages => \@m, statuses => \@s };
        }
        push @entries, { changes => \@changes };
    }
    $inbox->clear;
    my $r = $ng->deliver(batch(entries => \@entries));
    is $r->status, 200, '1000 mixed updates: 200';
    my ($req) = $inbox->raw_requests;
    is_deeply ids_in($req->{body} // ''), \@want,
        '1000 mixed updates: messages then statuses of each change, in order';
    my $st = () = ($req->{body} // '') =~ /"kind":"status"/g;
    is $st, 400, '1000 mixed updates: 400 statuses';
}

# --- logging the events with escape=none: one line per delivery

{
    my $from = -s $EVENTS_LOG || 0;
    my $vfrom = -s $VARS_LOG || 0;
    my @d;
    for my $i (1 .. 5) {
        my @m = map { msg_text(from => new_contact(),
                               body => "log $i.$_ \x{e9} \"q\" \\ /") } 1 .. $i;
        push @d, [ delivery(messages => \@m), [ map { $_->get('id') } @m ] ];
        my $r = $ng->deliver($d[-1][0], path => '/local');
        is $r->status, 200, "/local delivery $i: 200";
    }
    # a duplicate and a quarantined delivery log lines too
    my $r = $ng->deliver($d[0][0], path => '/local');
    is $r->header('x-mw-result'), 'duplicate', '/local repeat: duplicate';

    # Each request writes its line when it ends: with two workers, one
    # slowed down (a busy host) may write after the next request's, so
    # lines are matched to deliveries by their first event's id.
    my @lines = log_lines($EVENTS_LOG, 6, $from);
    is scalar @lines, 6, 'events log: one line per delivery';
    my %by_first;
    my $empty = 0;
    for my $l (@lines) {
        my $j = json_decode($l);
        ok ref $j eq 'HASH', 'events log line: JSON'
            or diag substr($l // '', 0, 200);
        my $ev = ref $j eq 'HASH' ? $j->{events} // [] : [];
        if (@$ev) { $by_first{ $ev->[0]{id} // '' } = $ev }
        else { $empty++ }
    }
    for my $i (0 .. 4) {
        my $ev = $by_first{ $d[$i][1][0] } // [];
        is_deeply [ map { $_->{id} } @$ev ], $d[$i][1],
            "events log, delivery " . ($i + 1) . ': the delivery\'s events';
        is $ev->[0]{content}{body},
           "log " . ($i + 1) . ".1 \x{e9} \"q\" \\ /",
           "events log, delivery " . ($i + 1) . ': text exact (escape=none)';
    }
    is $empty, 1, 'events log: a duplicate delivery logs no events';

    my @v = sort { $a cmp $b } log_lines($VARS_LOG, 6, $vfrom);
    is_deeply \@v, ['duplicate 1 0', 'new 1 1', 'new 2 2', 'new 3 3',
                    'new 4 4', 'new 5 5'],
        '$meta_webhook_result $meta_webhook_updates $meta_webhook_new';

    # 1000 updates: one line
    $from = -s $EVENTS_LOG || 0;
    my ($body, $ids) = big_batch(n => 1000);
    $r = $ng->deliver($body, path => '/local');
    is $r->status, 200, '/local 1000 updates: 200';
    @lines = log_lines($EVENTS_LOG, 1, $from);
    is scalar @lines, 1, '/local 1000 updates: one log line';
    is_deeply ids_in($lines[0] // ''), $ids, '/local 1000 updates: in order';

    # refused and handshake requests log an empty variable, not junk
    $vfrom = -s $VARS_LOG || 0;
    $ng->post('/local', '{}');
    $ng->handshake(path => '/local', 'hub.mode' => 'subscribe',
                   'hub.verify_token' => $TOKEN, 'hub.challenge' => '5');
    # (a refused request's log line may come after the lingering close,
    # so the order of the two lines is not fixed)
    @v = sort { $a cmp $b } log_lines($VARS_LOG, 2, $vfrom);
    like $v[0] // '', qr/^handshake (?:-|0) (?:-|0)$/, 'handshake: result logged';
    like $v[1] // '', qr/^refused (?:-|0) (?:-|0)$/, 'refused: result logged';
}

unlike $ng->error_log, qr/\[(?:alert|emerg|crit)\]|exited on signal/,
    'no crash or alert in the error log';

done_testing;
