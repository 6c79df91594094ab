#!/usr/bin/perl
# nginx -t: the configuration errors and warnings an operator must see
# before a reload, and the ones that must not happen.

use strict;
use warnings;
use Test::More;
use lib 't/lib';
use MWTest;

plan skip_all => "no module at $MODULE (run make)" unless -f $MODULE;

my $OK = qr/syntax is ok.*test is successful/s;

# a location with the given directives; %SECRET_FILE% is the 0600 demo
# secret of the run dir
sub loc {
    my ($directives, %o) = @_;
    my $size = $o{body_size} // '4m';
    return "location /webhook {\n    client_max_body_size $size;\n"
         . "    meta_webhook;\n$directives\n}\n";
}

my $SECRET_LINE = "    meta_webhook_app_secret_file %SECRET_FILE%;\n"
                . "    meta_webhook_verify_token $TOKEN;\n";

sub check {
    my ($name, %o) = @_;
    my $expect = delete $o{expect};         # 'ok' or 'fail'
    my $like = delete $o{like};
    my $unlike = delete $o{unlike};
    my ($rc, $out, $ng) = nginx_t(%o);
    if ($expect eq 'ok') {
        is $rc, 0, "$name: nginx -t succeeds" or diag $out;
        like $out, $OK, "$name: syntax ok";
    } else {
        isnt $rc, 0, "$name: nginx -t fails" or diag $out;
        unlike $out, qr/test is successful/, "$name: not successful";
    }
    like $out, $like, "$name: output names the problem" or diag $out
        if $like;
    unlike $out, $unlike, "$name: no unwanted message" or diag $out
        if $unlike;
    unlike $out, qr/\Q$SECRET\E/, "$name: the secret is never printed";
    return ($rc, $out, $ng);
}

# --- the good configuration

check('minimal location', expect => 'ok',
      server_conf => loc($SECRET_LINE),
      unlike => qr/readable by others|client_max_body_size|\[emerg\]/);

check('all directives', expect => 'ok',
      http_conf => 'meta_webhook_state shm zone=hooks:1m;',
      server_conf => loc($SECRET_LINE . <<'EOF'),
    meta_webhook_app_secret_previous_file %SECRET_FILE%;
    meta_webhook_dead_letter_path %DIR%/dead;
    meta_webhook_account 102290129340398 106540352242922 106540352242923;
    meta_webhook_account 102290129340399 106540352242999;
    meta_webhook_quarantine_detectors card iban;
    meta_webhook_claim_timeout 30s;
    meta_webhook_dedupe_ttl 7d;
    meta_webhook_json_reader jansson;
EOF
      unlike => qr/\[warn\]/);

for my $r ('fast', 'jansson') {
    check("json reader '$r'", expect => 'ok',
          server_conf => loc($SECRET_LINE
                             . "    meta_webhook_json_reader $r;"));
}

check('json reader unknown', expect => 'fail',
      server_conf => loc($SECRET_LINE . '    meta_webhook_json_reader yajl;'),
      like => qr/invalid value "yajl" in \S+nginx\.conf:\d+/);

check('state shm without zone', expect => 'ok',
      http_conf => 'meta_webhook_state shm;',
      server_conf => loc($SECRET_LINE));

check('smallest zone nginx allows (8 pages)', expect => 'ok',
      http_conf => 'meta_webhook_state shm zone=tiny:32k;',
      server_conf => loc($SECRET_LINE));

for my $d ('card', 'iban', 'off', 'iban card') {
    check("detectors '$d'", expect => 'ok',
          server_conf => loc($SECRET_LINE
                             . "    meta_webhook_quarantine_detectors $d;"));
}

# --- the app secret file

check('no app secret file directive', expect => 'fail',
      server_conf => loc("    meta_webhook_verify_token $TOKEN;"),
      like => qr/meta_webhook_app_secret_file/);

check('app secret file missing', expect => 'fail',
      server_conf => loc("    meta_webhook_app_secret_file %DIR%/conf/nope;\n"
                         . "    meta_webhook_verify_token $TOKEN;"),
      like => qr{conf/nope});

{
    my $ng = MWTest::Nginx->new;
    my $empty = $ng->write_file('empty_secret', '', 0600);
    my ($rc, $out) = $ng->test_config(server_conf => loc(
        "    meta_webhook_app_secret_file $empty;\n"
        . "    meta_webhook_verify_token $TOKEN;"));
    isnt $rc, 0, 'empty app secret file: nginx -t fails' or diag $out;
    like $out, qr/empty_secret/, 'empty app secret file: named' or diag $out;

    my $nl = $ng->write_file('newline_secret', "\n", 0600);
    ($rc, $out) = $ng->test_config(server_conf => loc(
        "    meta_webhook_app_secret_file $nl;\n"
        . "    meta_webhook_verify_token $TOKEN;"));
    isnt $rc, 0, 'app secret file holding only a newline: nginx -t fails'
        or diag $out;

    my $open = $ng->write_file('open_secret', $SECRET, 0644);
    ($rc, $out) = $ng->test_config(server_conf => loc(
        "    meta_webhook_app_secret_file $open;\n"
        . "    meta_webhook_verify_token $TOKEN;"));
    is $rc, 0, 'world-readable secret: nginx -t still succeeds' or diag $out;
    like $out, qr/\[warn\].*readable by others/,
        'world-readable secret: warning' or diag $out;
    unlike $out, qr/\Q$SECRET\E/, 'world-readable secret: not printed';

    my $prev = $ng->write_file('open_previous', $SECRET, 0604);
    ($rc, $out) = $ng->test_config(server_conf => loc($SECRET_LINE
        . "    meta_webhook_app_secret_previous_file $prev;"));
    is $rc, 0, 'world-readable previous secret: succeeds' or diag $out;
    like $out, qr/readable by others/, 'world-readable previous: warning'
        or diag $out;

    ($rc, $out) = $ng->test_config(server_conf => loc($SECRET_LINE
        . "    meta_webhook_app_secret_previous_file %DIR%/conf/nope2;"));
    isnt $rc, 0, 'previous secret file missing: nginx -t fails'
        or diag $out;
}

# --- client_max_body_size: Meta sends up to 3 MB

check('client_max_body_size 1m', expect => 'ok',
      server_conf => loc($SECRET_LINE, body_size => '1m'),
      like => qr/\[warn\].*client_max_body_size/);

check('client_max_body_size 4m', expect => 'ok',
      server_conf => loc($SECRET_LINE, body_size => '4m'),
      unlike => qr/client_max_body_size/);

check('client_max_body_size 0 (unlimited)', expect => 'ok',
      server_conf => loc($SECRET_LINE, body_size => '0'),
      unlike => qr/client_max_body_size/);

check('client_max_body_size inherited from http (1m default)',
      expect => 'ok',
      server_conf => "location /webhook {\n    meta_webhook;\n$SECRET_LINE}\n",
      like => qr/client_max_body_size/);

# --- accounts: at most 25 numbers per WhatsApp Business Account

{
    my @n25 = map { 106540352242900 + $_ } 1 .. 25;
    check('25 numbers for one account', expect => 'ok',
          server_conf => loc($SECRET_LINE
              . "    meta_webhook_account 102290129340398 @n25;"));

    my @n26 = map { 106540352242900 + $_ } 1 .. 26;
    check('26 numbers for one account', expect => 'fail',
          server_conf => loc($SECRET_LINE
              . "    meta_webhook_account 102290129340398 @n26;"),
          like => qr/meta_webhook_account|25/);

    my @a = @n25[0 .. 14];
    my @b = map { 106540352243000 + $_ } 1 .. 11;
    check('26 numbers for one account over two lines', expect => 'fail',
          server_conf => loc($SECRET_LINE
              . "    meta_webhook_account 102290129340398 @a;\n"
              . "    meta_webhook_account 102290129340398 @b;"),
          like => qr/meta_webhook_account|25/);

    check('account without a number', expect => 'fail',
          server_conf => loc($SECRET_LINE
              . "    meta_webhook_account 102290129340398;"));
}

# --- quarantine rules

{
    my $ng = MWTest::Nginx->new;
    my $good = $ng->write_file('rules', <<'EOF', 0644);
# operator rules: NAME  PCRE
phishing   (?i)verify\s+your\s+account
  
otp        \b\d{6}\b\s+is your code
EOF
    my ($rc, $out) = $ng->test_config(server_conf => loc($SECRET_LINE
        . "    meta_webhook_quarantine_rules $good;"));
    is $rc, 0, 'rules file: nginx -t succeeds' or diag $out;

    my $bad = $ng->write_file('bad_rules', "broken   (unclosed\n", 0644);
    ($rc, $out) = $ng->test_config(server_conf => loc($SECRET_LINE
        . "    meta_webhook_quarantine_rules $bad;"));
    isnt $rc, 0, 'rules file with a bad PCRE: nginx -t fails' or diag $out;
    like $out, qr/bad_rules|broken/, 'bad PCRE: file or rule named'
        or diag $out;

    my $noname = $ng->write_file('noname_rules', "onlyaname\n", 0644);
    ($rc, $out) = $ng->test_config(server_conf => loc($SECRET_LINE
        . "    meta_webhook_quarantine_rules $noname;"));
    isnt $rc, 0, 'rules line without a pattern: nginx -t fails'
        or diag $out;

    ($rc, $out) = $ng->test_config(server_conf => loc($SECRET_LINE
        . "    meta_webhook_quarantine_rules %DIR%/conf/no_rules;"));
    isnt $rc, 0, 'rules file missing: nginx -t fails' or diag $out;
}

check('unknown detector', expect => 'fail',
      server_conf => loc($SECRET_LINE
                         . '    meta_webhook_quarantine_detectors ssn;'));

check('detectors off with another', expect => 'fail',
      server_conf => loc($SECRET_LINE
                         . '    meta_webhook_quarantine_detectors off card;'));

# --- times and zones

check('claim timeout not a time', expect => 'fail',
      server_conf => loc($SECRET_LINE . '    meta_webhook_claim_timeout soon;'));

check('dedupe ttl not a time', expect => 'fail',
      server_conf => loc($SECRET_LINE . '    meta_webhook_dedupe_ttl forever;'));

check('dedupe ttl shorter than Meta retries (7 days)', expect => 'fail',
      server_conf => loc($SECRET_LINE . '    meta_webhook_dedupe_ttl 1h;'),
      like => qr/meta_webhook_dedupe_ttl/);

check('dedupe ttl 8d', expect => 'ok',
      server_conf => loc($SECRET_LINE . '    meta_webhook_dedupe_ttl 8d;'));

check('state backend unknown', expect => 'fail',
      http_conf => 'meta_webhook_state redis;',
      server_conf => loc($SECRET_LINE));

check('zone without a size', expect => 'fail',
      http_conf => 'meta_webhook_state shm zone=nosize;',
      server_conf => loc($SECRET_LINE));

check('zone below nginx minimum', expect => 'fail',
      http_conf => 'meta_webhook_state shm zone=small:4k;',
      server_conf => loc($SECRET_LINE));

# --- contexts

check('meta_webhook_state in a location', expect => 'fail',
      server_conf => loc($SECRET_LINE . '    meta_webhook_state shm;'),
      like => qr/"meta_webhook_state" directive is not allowed here/);

check('meta_webhook at http level', expect => 'fail',
      http_conf => 'meta_webhook;',
      server_conf => loc($SECRET_LINE),
      like => qr/"meta_webhook" directive is not allowed here/);

done_testing;
