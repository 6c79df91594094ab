package MWTest::Inbox;

# The fake application ("inbox") that nginx hands events to: a forked
# Perl HTTP server on 127.0.0.1, any free port.  Every request is
# recorded, in arrival order, as DIR/req-NNNNNN.{head,body}, before it is
# answered; the answer (status, body, delay) is read per request from a
# control file that the test changes at run time with ->set.  A request
# to be answered after a delay is answered by a forked child, so that
# concurrent hand-offs are accepted and recorded while others wait.

use strict;
use warnings;

use JSON::PP ();
use POSIX ();
use Time::HiRes ();

use MWTest::Server;

use parent 'MWTest::Owned';       # stop() when its owner is done

sub start {
    my ($class, %o) = @_;
    my $dir = MWTest::new_dir('inbox');
    my $listen = MWTest::Server::listen_local('inbox', 128);
    my $self = bless { dir => $dir, port => $listen->sockport,
                       owner => $$ }, $class;
    $self->set(status => $o{status} // 200, delay => $o{delay} // 0,
               body => $o{body} // '{"ok":true}');
    $self->{pid} = MWTest::Server::spawn($listen,
        sub { _serve_connection(@_, $dir) });
    MWTest::register($self);
    return $self;
}

sub port { $_[0]{port} }
sub dir  { $_[0]{dir} }

# set(status => 503, delay => 1.5, body => '...')
sub set {
    my ($self, %o) = @_;
    my %cur = %{ $self->{control} // {} };
    %cur = (%cur, %o);
    $self->{control} = \%cur;
    MWTest::spew("$self->{dir}/control",
        JSON::PP->new->canonical->encode(\%cur));
}

sub _files {
    my ($self) = @_;
    opendir my $dh, $self->{dir} or return ();
    my @f = sort grep { /^req-\d+\.body$/ } readdir $dh;
    closedir $dh;
    return @f;
}

sub count { scalar $_[0]->_files }

# [{method, uri, headers => {lc name => value}, body}] in arrival order
sub raw_requests {
    my ($self) = @_;
    my @r;
    for my $f ($self->_files) {
        (my $h = $f) =~ s/\.body$/.head/;
        my $head = MWTest::slurp("$self->{dir}/$h") // '';
        my ($line, @lines) = split /\r\n/, $head;
        my ($method, $uri) = split / /, $line // '';
        my %h;
        for (@lines) {
            my ($k, $v) = /^([^:]+):\s*(.*)$/ or next;
            $h{ lc $k } = $v;
        }
        push @r, { method => $method, uri => $uri, headers => \%h,
                   body => MWTest::slurp("$self->{dir}/$f") // '',
                   file => "$self->{dir}/$f" };
    }
    return @r;
}

# the decoded JSON bodies (undef for a body that is not JSON)
sub requests {
    my ($self) = @_;
    return map { MWTest::json_decode($_->{body}) } $self->raw_requests;
}

# every event of every request, in order
sub events {
    my ($self) = @_;
    return map { ref $_ eq 'HASH' && ref $_->{events} eq 'ARRAY'
                 ? @{ $_->{events} } : () } $self->requests;
}

# forget what was recorded so far
sub clear {
    my ($self) = @_;
    unlink map { my $h = $_; $h =~ s/\.body$/.head/;
                 ("$self->{dir}/$_", "$self->{dir}/$h") } $self->_files;
}

sub stop {
    my ($self) = @_;
    my $pid = delete $self->{pid} or return;
    kill 'TERM', $pid;
    my $gone = MWTest::wait_until(sub { waitpid($pid, POSIX::WNOHANG()) == $pid }, 3);
    if (!$gone) { kill 'KILL', $pid; waitpid $pid, 0 }
    # children answering delayed requests die with their sleep; kill any
    # that are still there
    if (opendir my $dh, '/proc') {
        for my $p (grep { /^\d+$/ } readdir $dh) {
            my $st = MWTest::slurp("/proc/$p/stat") // next;
            kill 'KILL', $p if $st =~ /\)\s+\S+\s+(\d+)/ && $1 == $pid;
        }
    }
}


# --- the server (child process)

my $SEQ = 0;            # requests recorded by this server process

# one connection, one request: recorded, then answered as the control
# file says
sub _serve_connection {
    my ($c, $listen, $dir) = @_;
    my $buf = '';
    my ($head, $body) = MWTest::Server::read_request($c, \$buf);
    if (!defined $head) {
        close $c;
        return;
    }
    my $name = sprintf 'req-%06d', ++$SEQ;
    MWTest::spew("$dir/$name.head", $head);
    MWTest::spew("$dir/$name.body", $body);

    my $ctl = eval {
        JSON::PP->new->decode(MWTest::slurp("$dir/control") // '{}')
    } || {};
    my $status = $ctl->{status} // 200;
    my $rbody = $ctl->{body} // '';
    my $resp = "HTTP/1.1 $status X\r\n"
             . "Content-Type: application/json\r\n"
             . 'Content-Length: ' . length($rbody) . "\r\n"
             . "Connection: close\r\n\r\n$rbody";

    if ($ctl->{delay}) {
        # answered by a child, so that the next connection is accepted
        # (and recorded) while this one waits
        my $pid = fork;
        if (defined $pid && $pid == 0) {
            close $listen;
            Time::HiRes::sleep($ctl->{delay});
            syswrite $c, $resp;
            close $c;
            POSIX::_exit(0);
        }
        close $c;
        return;
    }
    syswrite $c, $resp;
    close $c;
}

1;
