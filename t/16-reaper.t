#!/usr/bin/perl
# The shm zone's reaper: contacts live a day past their window, contacts
# with an opt-in or opt-out 400 days.  The long-lived ones are kept in a
# queue of their own, so that a few of them falling silent never hide the
# expired windows behind them: those are removed as the zone is used, and
# the zone does not fill up and fall back to eviction.
#
# The zone is fresh (its own nginx), and its entries are read from
# /status (state.entries): 52 old contacts are added, 12 with an opt-in
# (live for 400 days) first, then 40 whose windows ended a day ago; later
# deliveries must reap the 40.

use strict;
use warnings;
use Test::More;
use lib 't/lib';
use MWTest;
use MWTest::Meta;

plan skip_all => "no module at $MODULE (run make)" unless -f $MODULE;

my ($ng, $inbox) = setup(
    http_conf => 'meta_webhook_state shm zone=reaper:1m;',
    server_conf => "location = /status {\n    meta_webhook_status;\n}\n");

sub entries {
    my $j = $ng->get('/status')->json // {};
    return $j->{state}{entries};
}

my $old = time - 3 * 86400;     # windows ended two days ago, records a day

my $e0 = entries();
ok defined $e0, 'state.entries is on the status page';

# 12 contacts opt in, long ago: their records live 400 days
my @optin = map { msg_text(from => new_contact(), body => 'YES', ts => $old) }
            1 .. 12;
is $ng->deliver(delivery(messages => \@optin))->status, 200,
    '12 old opt-ins: 200';

# 40 contacts wrote long ago: their records have expired already
my @gone = map { msg_text(from => new_contact(), body => 'hello', ts => $old) }
           1 .. 40;
is $ng->deliver(delivery(messages => \@gone))->status, 200,
    '40 old messages: 200';

my $e1 = entries();
# every message: a dedupe key and a contact
is $e1 - $e0, 2 * 52, 'the zone holds 52 dedupe keys and 52 contacts';

# ten deliveries of today: each adds two entries and reaps expired
# contacts from the tail of the contacts' queue (a few per delivery)
for my $k (1 .. 10) {
    my $r = $ng->deliver(delivery(messages => [
        msg_text(from => new_contact(), body => "today $k") ]));
    is $r->status, 200, "delivery of today $k: 200";
}

my $e2 = entries();
is $e2 - $e1, 2 * 10 - 40,
    'the 40 expired contacts were reaped, the 12 with an opt-in kept '
    . "(entries $e1 -> $e2)";

# the dedupe keys of those old messages stay for their 8 days
is $ng->deliver(delivery(messages => \@optin))->header('x-mw-result'),
    'duplicate', 'a repeat of the old opt-ins\' delivery: duplicate';

done_testing;
