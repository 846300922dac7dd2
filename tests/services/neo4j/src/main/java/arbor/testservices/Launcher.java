package arbor.testservices;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.time.Instant;
import java.util.concurrent.CountDownLatch;

import org.neo4j.configuration.Config;
import org.neo4j.configuration.GraphDatabaseInternalSettings;
import org.neo4j.configuration.GraphDatabaseSettings;
import org.neo4j.configuration.connectors.BoltConnector;
import org.neo4j.configuration.connectors.BoltConnectorInternalSettings;
import org.neo4j.configuration.connectors.HttpConnector;
import org.neo4j.configuration.connectors.HttpsConnector;
import org.neo4j.configuration.helpers.SocketAddress;
import org.neo4j.dbms.api.DatabaseManagementService;
import org.neo4j.dbms.api.DatabaseManagementServiceBuilder;
import org.neo4j.io.ByteUnit;
import org.neo4j.io.fs.DefaultFileSystemAbstraction;
import org.neo4j.io.fs.FileSystemAbstraction;
import org.neo4j.kernel.impl.security.User;
import org.neo4j.logging.NullLogProvider;
import org.neo4j.memory.EmptyMemoryTracker;
import org.neo4j.server.security.SecureHasher;
import org.neo4j.server.security.SystemGraphCredential;
import org.neo4j.server.security.auth.CommunitySecurityModule;
import org.neo4j.server.security.auth.FileUserRepository;
import org.neo4j.string.UTF8;

/**
 * Embedded Neo4j Community with only the Bolt connector, for arbor's integration tests.
 *
 * <p>Usage: {@code Launcher HOME_DIR BOLT_PORT PASSWORD READY_FILE}
 *
 * <ul>
 *   <li>HOME_DIR: Neo4j home (databases, transaction logs and Neo4j's own logs go below it);
 *       reusing it keeps the data, so a restart after a crash or a stop sees the same graph.
 *   <li>BOLT_PORT: Bolt listens on 127.0.0.1:BOLT_PORT only. No HTTP/HTTPS connector.
 *   <li>PASSWORD: password of user {@code neo4j}; auth is on. An empty string turns auth off.
 *   <li>READY_FILE: written once Bolt is up (tests/services/lib.sh
 *       waits for it as well as for a Bolt handshake).
 * </ul>
 *
 * <p>SIGTERM (or SIGINT) shuts the DBMS down cleanly through a shutdown hook.
 */
public final class Launcher {
    private Launcher() {}

    private static void log(String msg) {
        System.out.println(Instant.now() + " [arbor-neo4j] " + msg);
        System.out.flush();
    }

    private static void writeInitialPassword(Path home, String password) throws Exception {
        Config config = Config.newBuilder().set(GraphDatabaseSettings.neo4j_home, home).build();
        Path file = CommunitySecurityModule.getInitialUserRepositoryFile(config);
        Files.createDirectories(file.getParent());
        Files.deleteIfExists(file);
        try (FileSystemAbstraction fs = new DefaultFileSystemAbstraction()) {
            FileUserRepository users =
                    new FileUserRepository(fs, file, NullLogProvider.getInstance(), EmptyMemoryTracker.INSTANCE);
            users.start();
            users.create(new User("neo4j", null,
                    SystemGraphCredential.createCredentialForPassword(UTF8.encode(password), new SecureHasher()),
                    false, false));
            users.shutdown();
        }
    }

    public static void main(String[] args) throws Exception {
        if (args.length != 4) {
            System.err.println("usage: Launcher HOME_DIR BOLT_PORT PASSWORD READY_FILE");
            System.exit(2);
        }
        Path home = Path.of(args[0]).toAbsolutePath();
        int port = Integer.parseInt(args[1]);
        String password = args[2];
        Path ready = Path.of(args[3]).toAbsolutePath();
        boolean auth = !password.isEmpty();

        Files.deleteIfExists(ready);
        if (auth && !Files.exists(home.resolve("data/databases/system"))) {
            // First start: let Neo4j create user neo4j with our password right away, as
            // `neo4j-admin dbms set-initial-password` does (a Cypher ALTER USER afterwards
            // would add seconds of query-planner warm-up to every start).
            writeInitialPassword(home, password);
        }
        log("starting Neo4j (home " + home + ", bolt 127.0.0.1:" + port + ", auth " + (auth ? "on" : "off") + ")");
        long t0 = System.nanoTime();

        DatabaseManagementService dbms = new DatabaseManagementServiceBuilder(home)
                .setConfig(BoltConnector.enabled, true)
                .setConfig(BoltConnector.listen_address, new SocketAddress("127.0.0.1", port))
                .setConfig(BoltConnector.advertised_address, new SocketAddress("127.0.0.1", port))
                .setConfig(HttpConnector.enabled, false)
                .setConfig(HttpsConnector.enabled, false)
                .setConfig(GraphDatabaseSettings.auth_enabled, auth)
                // -Darbor.neo4j.pagecache.mb (tests/services/lib.sh: ARBOR_NEO4J_PAGECACHE_MB); a
                // page cache smaller than the store makes every write batch fault pages in
                .setConfig(GraphDatabaseSettings.pagecache_memory,
                        ByteUnit.mebiBytes(Long.getLong("arbor.neo4j.pagecache.mb", 256L)))
                .setConfig(GraphDatabaseSettings.preallocate_logical_logs, false)
                // no usage reports: nothing may leave this machine
                .setConfig(GraphDatabaseSettings.udc_enabled, false)
                .setConfig(GraphDatabaseInternalSettings.udc_network_enabled, false)
                // Bolt otherwise waits 2 x 5 s for idle connections and Netty on shutdown
                .setConfig(BoltConnectorInternalSettings.connection_shutdown_wait_time, Duration.ofMillis(500))
                .setConfig(BoltConnectorInternalSettings.thread_pool_shutdown_wait_time, Duration.ofMillis(500))
                .setConfig(GraphDatabaseInternalSettings.netty_server_shutdown_quiet_period, 0)
                .setConfig(GraphDatabaseInternalSettings.netty_server_shutdown_timeout, Duration.ofSeconds(2))
                .build();

        CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            log("shutdown requested, stopping Neo4j");
            try {
                Files.deleteIfExists(ready);
            } catch (Exception ignored) {
                // best effort
            }
            dbms.shutdown();
            log("Neo4j stopped");
            stopped.countDown();
        }, "arbor-neo4j-shutdown"));

        Files.writeString(ready, ProcessHandle.current().pid() + "\n");
        log(String.format("ready after %.1f s", (System.nanoTime() - t0) / 1e9));
        stopped.await();
    }
}
