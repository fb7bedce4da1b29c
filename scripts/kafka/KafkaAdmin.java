// Readiness and topics for the local Kafka broker, in one JVM start (each `kafka-topics` call would
// cost a JVM start of its own). Compiled by `scripts/services.sh install kafka` against the broker's
// kafka-clients jar; run by `scripts/services.sh start|topics`.
//
//   java -cp CLASSES:LIBS/* KafkaAdmin BOOTSTRAP TIMEOUT_SECONDS [NAME:PARTITIONS ...]
//
// Waits until the broker answers a metadata request (describeCluster), then creates each topic that
// does not exist yet (an existing topic is kept as it is) and waits until every partition of each
// has a leader. Exit 0 when all is done, 1 with a one-line reason on stderr otherwise.

import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.common.TopicPartitionInfo;
import org.apache.kafka.common.errors.TopicExistsException;

public final class KafkaAdmin {
    public static void main(String[] args) throws Exception {
        if (args.length < 2) {
            System.err.println("usage: KafkaAdmin BOOTSTRAP TIMEOUT_SECONDS [NAME:PARTITIONS ...]");
            System.exit(2);
        }
        String bootstrap = args[0];
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(Long.parseLong(args[1]));
        Properties props = new Properties();
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "2000");
        props.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "4000");
        props.put(AdminClientConfig.RECONNECT_BACKOFF_MAX_MS_CONFIG, "200");
        try (Admin admin = Admin.create(props)) {
            String lastError = "no answer";
            while (true) {
                try {
                    if (!admin.describeCluster().nodes().get(4, TimeUnit.SECONDS).isEmpty()) {
                        break;
                    }
                    lastError = "no broker in the cluster metadata";
                } catch (ExecutionException | java.util.concurrent.TimeoutException e) {
                    lastError = String.valueOf(e.getCause() != null ? e.getCause() : e);
                }
                if (System.nanoTime() > deadline) {
                    fail("Kafka at " + bootstrap + " did not answer metadata requests: " + lastError);
                }
                Thread.sleep(100);
            }
            List<NewTopic> wanted = new ArrayList<>();
            for (int i = 2; i < args.length; i++) {
                String[] parts = args[i].split(":", 2);
                int partitions = parts.length == 2 ? Integer.parseInt(parts[1]) : 4;
                wanted.add(new NewTopic(parts[0], partitions, (short) 1));
            }
            for (NewTopic t : wanted) {
                try {
                    admin.createTopics(List.of(t)).all().get(30, TimeUnit.SECONDS);
                    System.out.println("topic " + t.name() + ": created (" + t.numPartitions() + " partitions)");
                } catch (ExecutionException e) {
                    if (!(e.getCause() instanceof TopicExistsException)) {
                        fail("creating topic " + t.name() + ": " + e.getCause());
                    }
                    System.out.println("topic " + t.name() + ": already exists");
                }
            }
            List<String> names = wanted.stream().map(NewTopic::name).toList();
            while (!names.isEmpty()) {
                try {
                    Map<String, TopicDescription> d = admin.describeTopics(names).allTopicNames().get(4, TimeUnit.SECONDS);
                    boolean led = d.values().stream()
                            .flatMap(td -> td.partitions().stream())
                            .map(TopicPartitionInfo::leader)
                            .allMatch(l -> l != null && !l.isEmpty());
                    if (led) {
                        break;
                    }
                } catch (ExecutionException | java.util.concurrent.TimeoutException e) {
                    // Metadata of a just-created topic can lag by a moment: ask again.
                }
                if (System.nanoTime() > deadline) {
                    fail("topics " + names + " have no leader yet");
                }
                Thread.sleep(50);
            }
        }
    }

    private static void fail(String why) {
        System.err.println(why);
        System.exit(1);
    }
}
