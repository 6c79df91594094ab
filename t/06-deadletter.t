#!/usr/bin/perl
# Signed bodies that cannot be used: kept as dead letters and answered
# 200 (no 7 days of retries), quarantined text masked; the allowlist of
# business numbers.

use strict;
use warnings;
use Test::More;
use lib 't/lib';
use MWTest;
use MWTest::Meta;

plan skip_all => "no module at $MODULE (run make)" unless -f $MODULE;

# PNID and 24 more: the 25 numbers a WABA may have
my @N25 = map { 106540352242900 + $_ } 1 .. 24;

my ($ng, $inbox) = setup(
    files => { rules => ["phishing  (?i)verify\\s+your\\s+account\n", 0644] },
    extra => "meta_webhook_dead_letter_path %DIR%/dead;\n"
           . "    meta_webhook_quarantine_rules %DIR%/conf/rules;",
    server_conf =>
        webhook_location(path => '/accounts', inbox => '%INBOX%',
            secret => '%SECRET_FILE%',
            extra => "meta_webhook_account ${\ WABA_ID} ${\ PNID} @N25;")
      . webhook_location(path => '/nokeep', inbox => '%INBOX%',
            secret => '%SECRET_FILE%'),
);

sub dead_files {
    opendir my $dh, $ng->dead_dir or return ();
    my @f = sort grep { !/^\./ } readdir $dh;
    return map { $ng->dead_dir . "/$_" } @f;
}

# Delivers a signed unusable body; checks 200, dead_letter, no hand-off,
# one new file holding the body, and the log line naming it.
sub dead_letter {
    my ($name, $body, %o) = @_;
    my %before = map { $_ => 1 } dead_files();
    my $calls = $inbox->count;
    my $mark = $ng->log_mark;
    my $r = $ng->deliver($body);
    is $r->status, 200, "$name: 200" or diag $r->summary;
    is $r->header('x-mw-result'), 'dead_letter', "$name: result dead_letter";
    is $inbox->count, $calls, "$name: nothing handed to the inbox";
    my @new = grep { !$before{$_} } dead_files();
    is scalar @new, 1, "$name: one dead-letter file";
    my $file = $new[0] // '';
    my $kept = slurp($file) // '';
    if ($o{masked}) {
        is length $kept, length $body, "$name: kept at full length";
    } else {
        is $kept, $body, "$name: the file holds the exact body";
    }
    my ($fname) = $file =~ m{([^/]+)\z};
    $fname //= "no file";
    my $log = $ng->wait_error_log(qr/\Q$fname\E/, $mark);
    like $log, qr/\Q$fname\E/, "$name: an error log line names the file";
    like $log, qr/\[error\]/, "$name: at level error";
    ok !((stat $file)[2] & 0004), "$name: the file is not world-readable"
        if -e $file;
    return ($file, $kept, $log);
}

dead_letter('not JSON', '{"object":"whatsapp_business_account",');
dead_letter('empty body', '');
dead_letter('a JSON string', '"whatsapp"');
dead_letter('a JSON array', '[{"object":"whatsapp_business_account"}]');
dead_letter('entry is an object', encode(obj(
    object => 'whatsapp_business_account',
    entry => obj(id => WABA_ID, changes => []))));
dead_letter('another object type', encode(obj(object => 'page',
    entry => [ obj(id => '1', time => num(1700000000), messaging => []) ])));
dead_letter('changes is an object', encode(obj(
    object => 'whatsapp_business_account',
    entry => [ obj(id => WABA_ID, changes => obj(field => 'messages')) ])));
dead_letter('entry without changes', encode(obj(
    object => 'whatsapp_business_account', entry => [ obj(id => WABA_ID) ])));
dead_letter('trailing garbage', delivery(messages => [ msg_text() ]) . 'x');

# a large unusable body, read from a temp file
{
    my $big = '{"object":"whatsapp_business_account","entry":[' . ('"x",' x 300000);
    cmp_ok length $big, '>', 1_000_000, 'a 1 MB unusable body';
    dead_letter('1 MB unusable body', $big);
}

# the same unusable body again: answered 200 again (never retried forever)
{
    my $b = '{"broken":';
    dead_letter('first copy', $b);
    my $r = $ng->deliver($b);
    is $r->status, 200, 'second copy of a dead letter: 200';
}

# a dead letter keeps no quarantined text
{
    my $card = '4111 1111 1111 1111';
    my $iban = 'DE89370400440532013000';
    my $body = encode(obj(object => 'whatsapp_business_account',
        entry => [ obj(id => WABA_ID, changes => [ obj(field => 'messages',
            value => obj(messaging_product => 'whatsapp',
                messages => [ obj(from => CONTACT, id => wamid(),
                    timestamp => '' . time, type => 'text',
                    text => obj(body => "card $card iban $iban and "
                        . 'please verify your account')) ])) ]) ]))
        . ',';      # one byte too many: unusable
    my ($file, $kept, $log) = dead_letter('quarantined text', $body,
                                          masked => 1);
    ok index($kept, $card) < 0, 'dead letter: the card number is masked';
    ok index($kept, '4111111111111111') < 0, 'dead letter: no compact card';
    ok index($kept, $iban) < 0, 'dead letter: the IBAN is masked';
    ok index($kept, 'verify your account') < 0,
        'dead letter: the operator rule match is masked';
    like $kept, qr/"whatsapp_business_account"/,
        'dead letter: the rest is kept for the operator';
    absent_from($ng->all_logs, $card, 'the card number is in no log');
    absent_from($ng->all_logs, $iban, 'the IBAN is in no log');
}

# a body escaped the way Meta escapes, with a card number after \n
{
    my $body = '{"object":"whatsapp_business_account","entry":[{"id":"1",'
             . '"changes":[{"value":{"messages":[{"text":{"body":'
             . '"x\n4111111111111111\u00e9"}}]},"field":"messages"}]}'; # no ]}
    my ($file, $kept) = dead_letter('card after a JSON escape', $body,
                                    masked => 1);
    ok index($kept, '4111111111111111') < 0,
        'escaped context: the card number is masked';
}

# a card number written with JSON escapes between its groups
{
    my $body = '{"object":"whatsapp_business_account","entry":[{"id":"1",'
             . '"changes":[{"value":{"messages":[{"text":{"body":'
             . '"card 4111\u00201111\u00201111\u00201111 ok"}}]},'
             . '"field":"messages"}]}';   # no ]}
    my ($file, $kept) = dead_letter('card with escaped spaces', $body,
                                    masked => 1);
    unlike $kept, qr/4111.{0,6}1111.{0,6}1111.{0,6}1111/,
        'escaped spaces: the card number is masked' or diag $kept;
}

# without meta_webhook_dead_letter_path: still 200, logged, not kept
{
    my %before = map { $_ => 1 } dead_files();
    my $mark = $ng->log_mark;
    my $r = $ng->deliver('{not json', path => '/nokeep');
    is $r->status, 200, 'no dead-letter path: 200';
    is $r->header('x-mw-result'), 'dead_letter', 'no dead-letter path: result';
    my $log = $ng->wait_error_log(qr/meta_webhook_dead_letter_path/, $mark);
    like $log, qr/\[error\].*meta_webhook_dead_letter_path/,
        'no dead-letter path: the log says how to keep them';
    is scalar(grep { !$before{$_} } dead_files()), 0,
        'no dead-letter path: no file';
}

# --- the allowlist of business numbers

{
    my $m = msg_text(from => new_contact(), body => 'listed');
    my $r = $ng->deliver(delivery(messages => [$m]), path => '/accounts');
    is $r->status, 200, 'listed phone_number_id: 200';
    is $r->header('x-mw-result'), 'new', 'listed: handed off';

    $r = $ng->deliver(delivery(pnid => $N25[23], messages => [
        msg_text(from => new_contact()) ]), path => '/accounts');
    is $r->status, 200, 'the 25th listed number: 200';

    my $calls = $inbox->count;
    my $mark = $ng->log_mark;
    my $un = msg_text(from => new_contact(), body => 'unlisted');
    $r = $ng->deliver(delivery(pnid => '999000111222333', messages => [$un]),
                      path => '/accounts');
    is $r->status, 403, 'unlisted phone_number_id: 403';
    is $r->header('x-mw-result'), 'refused', 'unlisted: refused';
    is $inbox->count, $calls, 'unlisted: nothing handed off';
    my $log = $ng->wait_error_log(qr/999000111222333/, $mark);
    like $log, qr/999000111222333/, 'unlisted: the log names the number';

    # a status for an unlisted number too
    $r = $ng->deliver(delivery(pnid => '999000111222334', statuses => [
        status_update(status => 'read') ]), path => '/accounts');
    is $r->status, 403, 'unlisted (status): 403';

    # one unlisted change in a batch refuses the delivery
    $r = $ng->deliver(batch(entries => [ { changes => [
        { messages => [ msg_text(from => new_contact()) ] },
        { pnid => '999000111222335',
          messages => [ msg_text(from => new_contact()) ] } ] } ]),
        path => '/accounts');
    is $r->status, 403, 'a batch with an unlisted number: 403';
    is $inbox->count, $calls, 'a batch with an unlisted number: not handed';

    # refused, not remembered: once listed, the retry is processed
    $r = $ng->deliver(delivery(pnid => '999000111222333', messages => [$un]));
    is $r->status, 200, 'the refused update is not a duplicate elsewhere';
    is $r->header('x-mw-result'), 'new', 'unlisted earlier, handed now';

    # a phone_number_id that is not a number is not logged verbatim
    $mark = $ng->log_mark;
    $r = $ng->deliver(delivery(pnid => "evil\r\nX-Log: injected",
        messages => [ msg_text(from => new_contact()) ]), path => '/accounts');
    is $r->status, 403, 'non-numeric phone_number_id: 403';
    my $l = $ng->wait_error_log(qr/not listed/, $mark);
    unlike $l, qr/X-Log: injected/, 'non-numeric id: not logged verbatim';
}

# more than 25 numbers for one account: nginx -t fails
{
    my @n26 = map { 106540352242900 + $_ } 1 .. 26;
    my ($rc, $out) = nginx_t(server_conf => webhook_location(
        secret => '%SECRET_FILE%',
        extra => "meta_webhook_account ${\ WABA_ID} @n26;"));
    isnt $rc, 0, '26 numbers for one account: nginx -t fails';
    like $out, qr/\[emerg\].*(?:25|phone numbers)/,
        '26 numbers: the message says why' or diag $out;
}

unlike $ng->error_log, qr/\[(?:alert|emerg|crit)\]|exited on signal/,
    'no crash or alert in the error log';

done_testing;
