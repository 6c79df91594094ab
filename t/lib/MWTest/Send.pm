package MWTest::Send;

# Helpers of the send-path tests (t/10-send.t .. t/13-status.t): a server
# with the webhook endpoint, the send location and the status location,
# in front of a fake Graph API (MWTest::Graph); request builders; checks
# of Graph-style error bodies.
#
#   my $s = send_setup(limit => 3);    # or fault_setup(...): /t1/, /down/
#   open_window($s, $contact, ts => time - 600);
#   my $r = graph_send($s, PNID, text_req($contact, 'hi'));
#   graph_error_is($r, 400, 131047, 'closed window');
#   my $st = status_of($s);  $st->{conversations}{used}

use strict;
use warnings;

use Exporter 'import';
use Test::More ();
use Time::HiRes ();
use JSON::PP ();

use MWTest;
use MWTest::Meta;
use MWTest::Graph;

our @EXPORT = qw(
    send_setup fault_setup graph_send graph_get text_req template_req
    image_req open_window deliver_status session_of status_of flat_status
    delta graph_error_is pretty_contact uri_escape no_crash
    $ACCESS_TOKEN
);

# a demo token, used only by the tests; long and distinctive so that a
# search of the logs cannot miss it
our $ACCESS_TOKEN = 'EAAGmw7tEsTTokenZBqX4d9KfQ2vR7nLp0aW3sYhJ5uC8eM1gT6iOxN'
                  . 'bDkVjF2zPq';

# send_setup(%o): starts (or uses) a fake Graph API, an inbox and nginx
# with
#   /webhook      the endpoint (events proxied to the inbox), /local
#   /graph/       meta_webhook_send (the location can be renamed: path)
#   = /status     meta_webhook_status
# Options:
#   graph (an MWTest::Graph to use), graph_url (instead of a fake),
#   token (default $ACCESS_TOKEN; written with a trailing newline),
#   workers (1), error_level, limit, anchor_day, verified (on/off),
#   optin (on/off), timezone, timeout ('5s'), connect_timeout,
#   accounts (the meta_webhook_account line for /graph/), body_size,
#   thread_pool (name; main_conf gets "thread_pool NAME threads=N" when
#   threads is given), send_extra (directives for /graph/), http_extra,
#   server_extra (more locations; %GRAPH_URL% in it is the Graph URL of
#   /graph/), main_conf.
# Returns a hash: {ng, graph, inbox, token, token_file, path}.
sub send_setup {
    my (%o) = @_;
    my $graph = $o{graph};
    $graph ||= MWTest::Graph->start unless defined $o{graph_url};
    my $url = $o{graph_url} // $graph->url;
    my $token = $o{token} // $ACCESS_TOKEN;
    my $path = $o{path} // '/graph/';

    my $http = '';
    if (defined $o{limit}) {
        $http .= "    meta_webhook_conversation_limit $o{limit}"
               . (defined $o{anchor_day} ? " anchor_day=$o{anchor_day}" : '')
               . ";\n";
    }
    $http .= "    meta_webhook_business_verified $o{verified};\n"
        if defined $o{verified};
    $http .= "    meta_webhook_require_optin $o{optin};\n"
        if defined $o{optin};
    $http .= "    meta_webhook_timezone $o{timezone};\n"
        if defined $o{timezone};
    $http .= $o{http_extra} // '';

    my $loc = "location $path {\n"
            . '    client_max_body_size ' . ($o{body_size} // '64k') . ";\n"
            . "    meta_webhook_send;\n"
            . "    meta_webhook_access_token_file %DIR%/conf/access_token;\n"
            . "    meta_webhook_graph_url $url;\n"
            . '    meta_webhook_graph_timeout ' . ($o{timeout} // '5s') . ";\n"
            . '    meta_webhook_graph_connect_timeout '
            . ($o{connect_timeout} // '2s') . ";\n"
            . "    add_header X-Worker \$pid always;\n";
    $loc .= "    meta_webhook_thread_pool $o{thread_pool};\n"
        if defined $o{thread_pool};
    $loc .= "    meta_webhook_account $o{accounts};\n" if defined $o{accounts};
    $loc .= "    $o{send_extra}\n" if defined $o{send_extra};
    $loc .= "}\n";
    $loc .= "location = /status {\n    meta_webhook_status;\n}\n";
    (my $extra = $o{server_extra} // '') =~ s/%GRAPH_URL%/$url/g;
    $loc .= $extra;

    my $main = $o{main_conf} // '';
    $main .= "thread_pool $o{thread_pool} threads=$o{threads};\n"
        if defined $o{thread_pool} && defined $o{threads};

    my ($ng, $inbox) = MWTest::setup(
        workers => $o{workers} // 1,
        error_level => $o{error_level},
        files => { access_token => ["$token\n", 0600],
                   %{ $o{files} // {} } },
        http_conf => $http,
        server_conf => $loc,
        start => { main_conf => $main, workers => $o{workers} // 1 },
    );
    return { ng => $ng, graph => $graph, inbox => $inbox, token => $token,
             path => $path, token_file => $ng->dir . '/conf/access_token' };
}

# fault_setup(%o): send_setup with two more send locations, for the ways
# a call to the Graph API fails:
#   /t1/     the same Graph, meta_webhook_graph_timeout 1s: a fake set to
#            answer slower times out (504)
#   /down/   a port that refuses connections (502); the connect_timeout
#            option, when given, applies here too
# %o as for send_setup; server_extra comes after these two.
sub fault_setup {
    my (%o) = @_;
    my $loc = "location /t1/ {\n"
            . "    meta_webhook_send;\n"
            . "    meta_webhook_access_token_file %DIR%/conf/access_token;\n"
            . "    meta_webhook_graph_url %GRAPH_URL%;\n"
            . "    meta_webhook_graph_timeout 1s;\n"
            . "}\n"
            . "location /down/ {\n"
            . "    meta_webhook_send;\n"
            . "    meta_webhook_access_token_file %DIR%/conf/access_token;\n"
            . '    meta_webhook_graph_url http://127.0.0.1:' . closed_port()
            . "/v23.0;\n";
    $loc .= "    meta_webhook_graph_connect_timeout $o{connect_timeout};\n"
        if defined $o{connect_timeout};
    $loc .= "}\n";
    return send_setup(%o, server_extra => $loc . ($o{server_extra} // ''));
}

# POST {path}[{version}/]{pnid}/messages with $body (bytes)
# %o: version ('v23.0'), headers ([...]), method, timeout, path (whole
# request path)
sub graph_send {
    my ($s, $pnid, $body, %o) = @_;
    my $ng = ref $s eq 'HASH' ? $s->{ng} : $s;
    my $base = ref $s eq 'HASH' ? $s->{path} : '/graph/';
    my $path = $o{path}
        // $base . (defined $o{version} ? "$o{version}/" : '')
           . "$pnid/messages";
    return $ng->request(method => $o{method} // 'POST', path => $path,
        body => $body,
        headers => ['Content-Type' => 'application/json',
                    @{ $o{headers} // [] }],
        defined $o{timeout} ? (timeout => $o{timeout}) : ());
}

sub graph_get {
    my ($s, $path) = @_;
    return $s->{ng}->get($path);
}

sub _q { JSON::PP->new->allow_nonref->ascii->encode($_[0]) }

sub text_req {
    my ($to, $text) = @_;
    return '{"messaging_product":"whatsapp","recipient_type":"individual",'
         . '"to":' . _q($to) . ',"type":"text","text":{"preview_url":false,'
         . '"body":' . _q($text // 'Thanks for writing!') . '}}';
}

sub template_req {
    my ($to, $name) = @_;
    return '{"messaging_product":"whatsapp","to":' . _q($to)
         . ',"type":"template","template":{"name":' . _q($name // 'hello_world')
         . ',"language":{"code":"en_US"}}}';
}

sub image_req {
    my ($to) = @_;
    return '{"messaging_product":"whatsapp","to":' . _q($to)
         . ',"type":"image","image":{"link":"https://example.com/a.jpg"}}';
}

# An inbound text message from $contact through the webhook location:
# opens (or moves) the contact's window.  %o: ts (default 10 minutes
# ago), pnid, body, path.  Returns the delivery's response.
sub open_window {
    my ($s, $contact, %o) = @_;
    my $m = msg_text(from => $contact, ts => $o{ts} // time() - 600,
                     body => $o{body} // 'Hi, I have a question');
    return $s->{ng}->deliver(delivery(messages => [$m],
                                      pnid => $o{pnid} // PNID),
                             path => $o{path} // '/webhook');
}

# a status webhook (e.g. failed 131047) for $contact
sub deliver_status {
    my ($s, $contact, %o) = @_;
    my $st = status_update(status => $o{status} // 'failed',
                           recipient => $contact,
                           ts => $o{ts} // time() - 5,
                           $o{id} ? (id => $o{id}) : (),
                           $o{errors} ? (errors => $o{errors}) : ());
    return $s->{ng}->deliver(delivery(statuses => [$st],
                                      pnid => $o{pnid} // PNID));
}

sub uri_escape {
    my ($s) = @_;
    $s =~ s/([^A-Za-z0-9_.~-])/sprintf '%%%02X', ord $1/ge;
    return $s;
}

# GET {path}{pnid}/sessions/{contact}: (decoded JSON or undef, response)
sub session_of {
    my ($s, $contact, %o) = @_;
    my $pnid = $o{pnid} // PNID;
    my $r = $s->{ng}->get($s->{path} . "$pnid/sessions/"
                          . ($o{raw} ? $contact : uri_escape($contact)));
    my $j = $r->status == 200 ? $r->json : undef;
    return wantarray ? ($j, $r) : $j;
}

# GET /status, decoded (undef when it is not JSON)
sub status_of {
    my ($s) = @_;
    my $ng = ref $s eq 'HASH' ? $s->{ng} : $s;
    my $r = $ng->get('/status');
    return $r->status == 200 ? $r->json : undef;
}

# {"a":{"b":1}} -> {"a.b" => 1}
sub flat_status {
    my ($h, $prefix, $out) = @_;
    $out //= {};
    $prefix //= '';
    return $out unless ref $h eq 'HASH';
    for my $k (keys %$h) {
        my $v = $h->{$k};
        if (ref $v eq 'HASH') {
            flat_status($v, "$prefix$k.", $out);
        } else {
            $out->{"$prefix$k"} = ref $v ? "$v" : $v;
        }
    }
    return $out;
}

# the numeric keys that changed between two status documents:
# {"sends.received" => 1, ...}; keys matching $skip are left out
sub delta {
    my ($before, $after, $skip) = @_;
    my $b = flat_status($before);
    my $a = flat_status($after);
    my %d;
    my %keys = map { $_ => 1 } keys %$a, keys %$b;
    for my $k (keys %keys) {
        next if $skip && $k =~ $skip;
        my ($x, $y) = ($b->{$k} // 0, $a->{$k} // 0);
        next unless $x =~ /^-?\d+$/ && $y =~ /^-?\d+$/;
        $d{$k} = $y - $x if $y != $x;
    }
    return \%d;
}

# A Graph-style refusal: HTTP $status, application/json, and
# {"error":{"message":"...","type":"...","code":$code,
#   "error_data":{"messaging_product":"whatsapp", ...}}}.
# $code may be an array of allowed codes, or undef (any integer).
# Returns the decoded error object ({} when it is not one).
sub graph_error_is {
    my ($r, $status, $code, $name) = @_;
    my $tb = Test::More->builder;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my $ok = $tb->is_num($r->status, $status, "$name: HTTP $status");
    $tb->diag('  got: ' . $r->summary) unless $ok;
    $tb->like($r->header('content-type') // '', qr{^application/json\b},
              "$name: Content-Type application/json");
    my $j = $r->json;
    my $e = ref $j eq 'HASH' && ref $j->{error} eq 'HASH' ? $j->{error} : undef;
    $tb->ok($e, "$name: a Graph-style error body")
        or $tb->diag('  body: ' . substr($r->body // '', 0, 300));
    $e //= {};
    $tb->ok(defined $e->{message} && !ref $e->{message}
            && length $e->{message}, "$name: error.message");
    $tb->ok(defined $e->{type} && !ref $e->{type} && length $e->{type},
            "$name: error.type");
    my $c = $e->{code};
    if (ref $code eq 'ARRAY') {
        $tb->ok(defined $c && !ref $c && (grep { $c eq $_ } @$code),
                "$name: error.code one of @$code")
            or $tb->diag('  got code ' . ($c // 'none') . ': '
                         . ($e->{message} // ''));
    } elsif (defined $code) {
        $tb->ok(defined $c && !ref $c && $c =~ /^\d+$/ && $c == $code,
                "$name: error.code $code")
            or $tb->diag('  got code ' . ($c // 'none') . ': '
                         . ($e->{message} // ''));
    } else {
        $tb->ok(defined $c && !ref $c && $c =~ /^\d+$/,
                "$name: error.code an integer");
    }
    $tb->is_eq(ref $e->{error_data} eq 'HASH'
               ? $e->{error_data}{messaging_product} : undef, 'whatsapp',
               "$name: error.error_data.messaging_product");
    return $e;
}

# "16505551234" written the way people do: "+1 650 555 1234"
sub pretty_contact {
    my ($c) = @_;
    return sprintf '+%s %s %s %s', substr($c, 0, 1), substr($c, 1, 3),
                   substr($c, 4, 3), substr($c, 7);
}

# no crash, alert or emergency in nginx's error log (since $mark)
sub no_crash {
    my ($ng, $name, $mark) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my $log = $ng->error_log_since($mark // 0);
    my @bad = grep { /\[(?:alert|emerg|crit)\]|exited on signal|core dumped/ }
              split /\n/, $log;
    my $ok = Test::More::ok(!@bad, $name);
    Test::More::diag(join "\n", map { substr $_, 0, 300 } @bad[0 .. ($#bad < 4 ? $#bad : 4)])
        unless $ok;
    return $ok;
}

1;
