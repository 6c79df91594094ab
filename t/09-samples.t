#!/usr/bin/perl
# The operator's tools: samples/*.json posted with scripts/mw-post and
# samples/app_secret reach the application as the documented events.

use strict;
use warnings;
use Test::More;
use lib 't/lib';
use MWTest;
use MWTest::Meta;

plan skip_all => "no module at $MODULE (run make)" unless -f $MODULE;

my $POST = "$ROOT/scripts/mw-post";
my $SAMPLE_SECRET = slurp("$ROOT/samples/app_secret");
ok defined $SAMPLE_SECRET && length $SAMPLE_SECRET > 8,
    'samples/app_secret holds a demo secret';

my ($ng, $inbox) = setup(secret => $SAMPLE_SECRET);
my $url = 'http://127.0.0.1:' . $ng->port . '/webhook';

sub run {
    my (@args) = @_;
    my $pid = open my $fh, '-|';
    die "fork: $!" unless defined $pid;
    if (!$pid) {
        open STDERR, '>&', \*STDOUT;
        exec($^X, $POST, @args) or POSIX::_exit(127);
    }
    local $/;
    my $out = <$fh> // '';
    close $fh;
    return ($? >> 8, $out);
}

# every sample is a valid delivery, byte for byte as Meta writes them
my %want = (
    'text.json'     => [[message => 'text', 'supported']],
    'image.json'    => [[message => 'image', 'supported']],
    'reaction.json' => [[message => 'reaction', 'unsupported']],
    'batch.json'    => [[message => 'text', 'supported'],
                        [message => 'audio', 'supported'],
                        [status => undef, undef],
                        [status => undef, undef]],
);

for my $f (sort keys %want) {
    my $path = "$ROOT/samples/$f";
    my $bytes = slurp($path);
    ok defined $bytes, "samples/$f exists";
    ok json_decode($bytes), "samples/$f is JSON";
    unlike $bytes, qr/[^\x00-\x7f]/, "samples/$f is escaped the way Meta escapes";

    $inbox->clear;
    my ($rc, $out) = run('-u', $url, $path);
    is $rc, 0, "mw-post $f: exit 0" or diag $out;
    like $out, qr/\Q$path\E: 200 /, "mw-post $f: prints the status";
    my @ev = $inbox->events;
    is_deeply [ map { [ $_->{kind}, $_->{type}, $_->{class} ] } @ev ],
        $want{$f}, "$f: the expected events";
}

# batch.json: the opt-in keyword and the 131047 status
{
    $inbox->clear;
    # already delivered: a duplicate now
    my ($rc, $out) = run('-u', $url, "$ROOT/samples/batch.json");
    is $rc, 0, 'batch.json again: exit 0';
    is $inbox->count, 0, 'batch.json again: duplicate, inbox not called';
}

# a wrong secret file: 403 and exit 1
{
    my $wrong = $ng->write_file('wrong_secret', "not-the-secret\n");
    my ($rc, $out) = run('-s', $wrong, '-u', $url, "$ROOT/samples/text.json");
    is $rc, 1, 'wrong secret: exit 1';
    like $out, qr/: 403 /, 'wrong secret: 403 printed';
}

# the handshake
{
    my ($rc, $out) = run('-u', $url, '--handshake', $TOKEN,
                         '--challenge', '1158201444');
    is $rc, 0, '--handshake: exit 0' or diag $out;
    like $out, qr/handshake: 200 .*\n1158201444\n/s, '--handshake: the echo';
    like $out, qr/handshake ok/, '--handshake: ok';

    ($rc, $out) = run('-u', $url, '--handshake', 'wrong-token');
    is $rc, 1, '--handshake with a wrong token: exit 1';
    like $out, qr/handshake: 403 /, '--handshake wrong token: 403';
}

# usage errors
{
    my ($rc, $out) = run();
    is $rc, 2, 'no file: usage, exit 2';
    like $out, qr/usage: mw-post/, 'no file: usage printed';
    ($rc, $out) = run('-u', 'http://127.0.0.1:' . closed_port() . '/x',
                      "$ROOT/samples/text.json");
    is $rc, 1, 'nobody listening: exit 1';
}

done_testing;
