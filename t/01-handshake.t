#!/usr/bin/perl
# GET: Meta's verification handshake; other methods.

use strict;
use warnings;
use Test::More;
use lib 't/lib';
use MWTest;

plan skip_all => "no module at $MODULE (run make)" unless -f $MODULE;

my ($ng, $inbox) = setup(
    # a 10 KB challenge must reach the module, not nginx's 414
    http_conf => 'large_client_header_buffers 4 32k;',
    server_conf => <<"EOF",
location /special {
    client_max_body_size 4m;
    meta_webhook;
    meta_webhook_verify_token "tok/en=1&x";
    meta_webhook_app_secret_file %SECRET_FILE%;
}
location /notoken {
    client_max_body_size 4m;
    meta_webhook;
    meta_webhook_app_secret_file %SECRET_FILE%;
}
EOF
);

sub hs { $ng->handshake(@_) }

# --- the good handshake

for my $c ('1158201444', '0', 'abc_DEF-1.2', 'x' x 48) {
    my $r = hs('hub.mode' => 'subscribe', 'hub.verify_token' => $TOKEN,
               'hub.challenge' => $c);
    is $r->status, 200, "challenge '$c': 200" or diag $r->summary;
    is $r->body, $c, "challenge '$c': body is exactly the challenge";
    like $r->header('content-type') // '', qr{^text/plain\b},
        "challenge '$c': text/plain";
    is $r->header('x-mw-result'), 'handshake', "challenge '$c': result";
}

# parameters in another order, the token percent-encoded the long way
{
    my $r = $ng->get("/webhook?hub.challenge=987654321&hub.verify_token="
        . join('', map { sprintf '%%%02X', ord } split //, $TOKEN)
        . '&hub.mode=subscribe');
    is $r->status, 200, 'parameters in any order, token percent-encoded'
        or diag $r->summary;
    is $r->body, '987654321', 'percent-encoded: the challenge';

    # a token with reserved characters arrives percent-encoded
    $r = hs(path => '/special', 'hub.mode' => 'subscribe',
            'hub.verify_token' => 'tok/en=1&x', 'hub.challenge' => '77');
    is $r->status, 200, 'token with reserved characters, encoded'
        or diag $r->summary;
    is $r->body, '77', 'reserved characters: the challenge';
}

# the handshake never calls the application
is $inbox->count, 0, 'no handshake reached the inbox';

# --- refused

{
    my $r = hs('hub.mode' => 'subscribe', 'hub.verify_token' => 'wrong',
               'hub.challenge' => '1158201444');
    is $r->status, 403, 'wrong token: 403';
    unlike $r->body, qr/1158201444/, 'wrong token: challenge not reflected';
    is $r->header('x-mw-result'), 'refused', 'wrong token: result refused';

    $r = hs('hub.mode' => 'subscribe', 'hub.verify_token' => "${TOKEN}x",
            'hub.challenge' => '1158201444');
    is $r->status, 403, 'token with a suffix: 403';

    $r = hs('hub.mode' => 'subscribe', 'hub.verify_token' => substr($TOKEN, 0, -1),
            'hub.challenge' => '1158201444');
    is $r->status, 403, 'token prefix: 403';

    $r = hs('hub.mode' => 'subscribe', 'hub.challenge' => '1158201444');
    is $r->status, 403, 'no token: 403';

    $r = hs('hub.mode' => 'subscribe', 'hub.verify_token' => '',
            'hub.challenge' => '1158201444');
    is $r->status, 403, 'empty token: 403';

    $r = hs('hub.mode' => 'unsubscribe', 'hub.verify_token' => $TOKEN,
            'hub.challenge' => '1158201444');
    ok $r->status == 403 || $r->status == 400,
        'mode other than subscribe: refused' or diag $r->summary;
    unlike $r->body, qr/1158201444/, 'other mode: not reflected';

    $r = hs('hub.verify_token' => $TOKEN, 'hub.challenge' => '1158201444');
    ok $r->status == 403 || $r->status == 400, 'no mode: refused'
        or diag $r->summary;
    unlike $r->body, qr/1158201444/, 'no mode: not reflected';

    # a location without a verify token refuses every handshake
    $r = $ng->get('/notoken?hub.mode=subscribe&hub.verify_token=&'
                  . 'hub.challenge=1158201444');
    is $r->status, 403, 'no verify token configured: 403 for an empty token';
    $r = $ng->get('/notoken?hub.mode=subscribe&hub.challenge=1158201444');
    is $r->status, 403, 'no verify token configured: 403 without a token';
}

# --- challenges that are not short tokens: refused, never reflected

{
    my %bad = (
        'markup'        => '<script>alert(1)</script>',
        'html entity'   => '&lt;b&gt;',
        'space'         => 'a b',
        'quote'         => 'a"b',
        'CRLF'          => "123\r\nX-Injected: 1",
        'NUL'           => "123\x00456",
        'non-ASCII'     => "123\xc3\xa9",
        '10 KB'         => 'A' x 10240,
        'empty'         => '',
    );
    for my $name (sort keys %bad) {
        my $c = $bad{$name};
        my $r = hs('hub.mode' => 'subscribe', 'hub.verify_token' => $TOKEN,
                   'hub.challenge' => $c);
        is $r->status, 400, "challenge $name: 400" or diag $r->summary;
        if (length $c) {
            my $probe = length $c > 40 ? substr($c, 0, 40) : $c;
            ok index($r->raw, $probe) < 0, "challenge $name: not reflected";
        }
        unlike $r->raw, qr/X-Injected/i, "challenge $name: no injection";
    }

    my $r = $ng->get("/webhook?hub.mode=subscribe&hub.verify_token=$TOKEN");
    is $r->status, 400, 'no challenge: 400' or diag $r->summary;

    # markup sent raw, not percent-encoded
    $r = $ng->get("/webhook?hub.mode=subscribe&hub.verify_token=$TOKEN"
                  . '&hub.challenge=<b>hi</b>');
    is $r->status, 400, 'raw markup in the query: 400' or diag $r->summary;
    unlike $r->body, qr/<b>hi/, 'raw markup: not reflected';

    # a bad challenge with a wrong token is refused either way
    $r = hs('hub.mode' => 'subscribe', 'hub.verify_token' => 'wrong',
            'hub.challenge' => '<svg onload=alert(1)>');
    ok $r->status == 403 || $r->status == 400,
        'bad challenge and wrong token: refused' or diag $r->summary;
    unlike $r->raw, qr/<svg/, 'bad challenge and wrong token: not reflected';
}

# --- methods

{
    my $r = $ng->request(method => 'HEAD', path => '/webhook?hub.mode='
        . "subscribe&hub.verify_token=$TOKEN&hub.challenge=12345");
    is $r->status, 405, 'HEAD: 405' or diag $r->summary;
    unlike $r->raw, qr/12345/, 'HEAD: challenge not reflected';
}
for my $m (qw(PUT DELETE PATCH OPTIONS PROPFIND)) {
    my $r = $ng->request(method => $m, path => '/webhook', body => '{}');
    is $r->status, 405, "$m: 405" or diag $r->summary;
}
{
    my $r = $ng->request(method => 'PUT', path => '/webhook',
        body => '{}', headers => ['X-Hub-Signature-256' => sig_header('{}')]);
    is $r->status, 405, 'PUT with a valid signature: 405';
}
is $inbox->count, 0, 'nothing reached the inbox';

# --- the verify token is a secret: in no log

{
    absent_from($ng->error_log, $TOKEN, 'the verify token: not in error.log');
    absent_from($ng->access_log, $TOKEN,
        'the verify token: not in access.log (default combined format)');
    absent_from($ng->all_logs, 'tok/en=1',
        'the other verify token: in no log');
    absent_from($ng->all_logs, 'tok%2Fen%3D1',
        'the other verify token, percent-encoded: in no log');
}

unlike $ng->error_log, qr/\[(?:alert|emerg|crit)\]|exited on signal/,
    'no crash or alert in the error log';

done_testing;
